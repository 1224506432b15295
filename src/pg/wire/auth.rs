//! A session's start-up and authentication as a pure state machine: the caller writes the
//! bytes it is given and feeds back each message it reads, over any transport (the
//! replication connection's tokio socket, a worker's blocking socket before the connection
//! moves onto the Redis event loop). One implementation of cleartext, md5 and SCRAM-SHA-256,
//! tested against a server side computed in the tests.

use super::backend::{Backend, ServerError};
use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;

/// What the caller does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Write these bytes, then read the next message.
    Send(Vec<u8>),
    /// Read the next message.
    Wait,
    /// The session is ready for queries: the settings PostgreSQL reported (ParameterStatus)
    /// and the key a cancel request names.
    Ready {
        parameters: Vec<(String, String)>,
        key: Option<(i32, i32)>,
    },
}

/// Why the start-up failed.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    /// PostgreSQL refused (a wrong password, an unknown database...).
    Server(ServerError),
    /// The server asked for what pgcache cannot give, or answered out of turn.
    Protocol(String),
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Server(e) => write!(f, "{} (SQLSTATE {})", e.message, e.code),
            AuthError::Protocol(what) => f.write_str(what),
        }
    }
}

/// The start-up exchange of one session.
pub struct Startup {
    user: String,
    password: Option<String>,
    state: State,
    parameters: Vec<(String, String)>,
    key: Option<(i32, i32)>,
}

enum State {
    /// Waiting for an authentication request or AuthenticationOk.
    Authenticating,
    /// SASLInitialResponse sent, waiting for the server-first message.
    ScramFirst(Box<ScramSha256>),
    /// SASLResponse sent, waiting for the server-final message.
    ScramFinal(Box<ScramSha256>),
    /// AuthenticationOk seen: settings and the key until ReadyForQuery.
    Authenticated,
    Done,
}

impl Startup {
    /// Starts a session of `user` with the startup `params` (database, settings...; `user` is
    /// added first). Returns the exchange and the StartupMessage to write.
    pub fn new(
        params: &[(&str, &str)],
        user: &str,
        password: Option<String>,
    ) -> Result<(Startup, Vec<u8>), AuthError> {
        let mut out = BytesMut::new();
        frontend::startup_message(
            std::iter::once(("user", user)).chain(params.iter().copied()),
            &mut out,
        )
        .map_err(|e| AuthError::Protocol(format!("cannot start a session: {e}")))?;
        let startup = Startup {
            user: user.to_string(),
            password,
            state: State::Authenticating,
            parameters: Vec::new(),
            key: None,
        };
        Ok((startup, out.to_vec()))
    }

    /// Takes the next message PostgreSQL sent.
    pub fn step(&mut self, message: Backend) -> Result<Step, AuthError> {
        // Anywhere: a refusal ends the exchange, notices are only informative.
        match message {
            Backend::Error(e) => {
                self.state = State::Done;
                return Err(AuthError::Server(e));
            }
            Backend::Notice(_) => return Ok(Step::Wait),
            _ => {}
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::Authenticating => self.authenticate(message),
            State::ScramFirst(mut scram) => match message {
                Backend::AuthenticationSaslContinue(data) => {
                    scram.update(&data).map_err(scram_failed)?;
                    let mut out = BytesMut::new();
                    frontend::sasl_response(scram.message(), &mut out).map_err(scram_failed)?;
                    self.state = State::ScramFinal(scram);
                    Ok(Step::Send(out.to_vec()))
                }
                other => Err(unexpected("SCRAM's first answer", &other)),
            },
            State::ScramFinal(mut scram) => match message {
                Backend::AuthenticationSaslFinal(data) => {
                    // Proves the server knew the password too; AuthenticationOk follows.
                    scram.finish(&data).map_err(scram_failed)?;
                    self.state = State::Authenticating;
                    Ok(Step::Wait)
                }
                other => Err(unexpected("SCRAM's final answer", &other)),
            },
            State::Authenticated => {
                self.state = State::Authenticated;
                match message {
                    Backend::ParameterStatus { name, value } => {
                        self.parameters.push((name, value));
                        Ok(Step::Wait)
                    }
                    Backend::CancelKey {
                        process_id,
                        secret_key,
                    } => {
                        self.key = Some((process_id, secret_key));
                        Ok(Step::Wait)
                    }
                    Backend::ReadyForQuery(_) => {
                        self.state = State::Done;
                        Ok(Step::Ready {
                            parameters: std::mem::take(&mut self.parameters),
                            key: self.key,
                        })
                    }
                    // NegotiateProtocolVersion and the like: nothing to answer.
                    _ => Ok(Step::Wait),
                }
            }
            State::Done => Err(AuthError::Protocol(
                "the session's start-up is already over".into(),
            )),
        }
    }

    fn authenticate(&mut self, message: Backend) -> Result<Step, AuthError> {
        let mut out = BytesMut::new();
        match message {
            Backend::AuthenticationOk => {
                self.state = State::Authenticated;
                return Ok(Step::Wait);
            }
            Backend::AuthenticationCleartext => {
                frontend::password_message(self.password()?.as_bytes(), &mut out)
                    .map_err(password_unsendable)?;
            }
            Backend::AuthenticationMd5(salt) => {
                let hash = md5_hash(self.user.as_bytes(), self.password()?.as_bytes(), salt);
                frontend::password_message(hash.as_bytes(), &mut out)
                    .map_err(password_unsendable)?;
            }
            Backend::AuthenticationSasl(mechanisms) => {
                if !mechanisms.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                    return Err(AuthError::Protocol(format!(
                        "PostgreSQL offers no authentication pgcache supports ({})",
                        mechanisms.join(", ")
                    )));
                }
                // No channel binding: the TLS connector does not expose the server
                // certificate's hash (libpq's channel_binding=disable).
                let scram =
                    ScramSha256::new(self.password()?.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), &mut out)
                    .map_err(scram_failed)?;
                self.state = State::ScramFirst(Box::new(scram));
                return Ok(Step::Send(out.to_vec()));
            }
            Backend::AuthenticationOther(code) => {
                return Err(AuthError::Protocol(format!(
                    "PostgreSQL asks for an authentication method pgcache does not support \
                     (code {code}); use scram-sha-256, md5 or password in pg_hba.conf"
                )));
            }
            other => return Err(unexpected("the start-up message", &other)),
        }
        self.state = State::Authenticating;
        Ok(Step::Send(out.to_vec()))
    }

    fn password(&self) -> Result<&str, AuthError> {
        self.password.as_deref().ok_or_else(|| {
            AuthError::Protocol(
                "PostgreSQL asks for a password and none is set (pg_password, PGPASSWORD or a \
                 passfile)"
                    .into(),
            )
        })
    }
}

fn unexpected(when: &str, message: &Backend) -> AuthError {
    AuthError::Protocol(format!("PostgreSQL sent {message:?} in answer to {when}"))
}

fn scram_failed(e: std::io::Error) -> AuthError {
    AuthError::Protocol(format!("SCRAM-SHA-256 authentication failed: {e}"))
}

fn password_unsendable(e: std::io::Error) -> AuthError {
    AuthError::Protocol(format!("the password cannot be sent: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::wire::server::{self, frame};
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use bytes::BytesMut;
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::{Digest, Sha256};

    /// The message the server sends, parsed as the client will read it.
    fn message(tag: u8, body: &[u8]) -> Backend {
        let mut input = BytesMut::from(&frame(tag, body)[..]);
        crate::pg::wire::backend::take_message(&mut input)
            .unwrap()
            .unwrap()
    }

    fn auth(code: u32, data: &[u8]) -> Backend {
        let mut body = code.to_be_bytes().to_vec();
        body.extend(data);
        message(b'R', &body)
    }

    /// After authentication: two settings, the key, ReadyForQuery.
    fn finish_start_up(startup: &mut Startup) {
        assert_eq!(startup.step(auth(0, b"")), Ok(Step::Wait));
        let settings = message(b'S', b"default_transaction_read_only\0on\0");
        assert_eq!(startup.step(settings), Ok(Step::Wait));
        let notice = message(b'N', b"SNOTICE\0VNOTICE\0C00000\0Mhello\0\0");
        assert_eq!(startup.step(notice), Ok(Step::Wait));
        assert_eq!(
            startup.step(message(b'S', b"server_version\x0017.2\0")),
            Ok(Step::Wait)
        );
        let mut key = 42i32.to_be_bytes().to_vec();
        key.extend(7i32.to_be_bytes());
        assert_eq!(startup.step(message(b'K', &key)), Ok(Step::Wait));
        assert_eq!(
            startup.step(message(b'Z', b"I")),
            Ok(Step::Ready {
                parameters: vec![
                    ("default_transaction_read_only".into(), "on".into()),
                    ("server_version".into(), "17.2".into())
                ],
                key: Some((42, 7))
            })
        );
        assert!(startup.step(message(b'Z', b"I")).is_err());
    }

    /// The one password message the client sends.
    fn password_sent(step: Result<Step, AuthError>) -> Vec<u8> {
        let Ok(Step::Send(bytes)) = step else {
            panic!("no password sent: {step:?}");
        };
        let messages = server::frontend_messages(&bytes);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].0, b'p');
        let body = &messages[0].1;
        assert_eq!(body.last(), Some(&0));
        body[..body.len() - 1].to_vec()
    }

    #[test]
    fn the_startup_message_names_the_user_first() {
        let (_, first) = Startup::new(&[("database", "db")], "ann", None).unwrap();
        let len = u32::from_be_bytes(first[..4].try_into().unwrap()) as usize;
        assert_eq!(len, first.len());
        assert_eq!(&first[4..8], &0x0003_0000u32.to_be_bytes());
        assert_eq!(&first[8..], b"user\0ann\0database\0db\0\0");
        assert!(Startup::new(&[("database", "d\0b")], "ann", None).is_err());
    }

    #[test]
    fn trust_needs_no_password() {
        let (mut startup, _) = Startup::new(&[], "ann", None).unwrap();
        finish_start_up(&mut startup);
    }

    #[test]
    fn cleartext_sends_the_password() {
        let (mut startup, _) = Startup::new(&[], "ann", Some("secret".into())).unwrap();
        assert_eq!(password_sent(startup.step(auth(3, b""))), b"secret");
        finish_start_up(&mut startup);
    }

    #[test]
    fn md5_sends_the_salted_hash() {
        let (mut startup, _) = Startup::new(&[], "ann", Some("secret".into())).unwrap();
        let sent = password_sent(startup.step(auth(5, &[1, 2, 3, 4])));
        // "md5" || hex(md5(hex(md5(password || user)) || salt)), as PostgreSQL computes it.
        let mut salted = md5_hex(b"secretann").into_bytes();
        salted.extend([1, 2, 3, 4]);
        assert_eq!(sent, format!("md5{}", md5_hex(&salted)).into_bytes());
        finish_start_up(&mut startup);
    }

    fn md5_hex(data: &[u8]) -> String {
        md5(data).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// RFC 1321 md5, small and slow: an oracle independent of the code under test.
    fn md5(message: &[u8]) -> [u8; 16] {
        const S: [u32; 64] = [
            7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20,
            5, 9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
            6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
        ];
        let k: Vec<u32> = (0..64)
            .map(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32)
            .collect();
        let mut state = [0x67452301u32, 0xefcdab89, 0x98badcfe, 0x10325476];
        let mut data = message.to_vec();
        data.push(0x80);
        while data.len() % 64 != 56 {
            data.push(0);
        }
        data.extend(((message.len() as u64) * 8).to_le_bytes());
        for chunk in data.chunks(64) {
            let m: Vec<u32> = chunk
                .chunks(4)
                .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
                .collect();
            let [mut a, mut b, mut c, mut d] = state;
            for i in 0..64 {
                let (f, g) = match i / 16 {
                    0 => ((b & c) | (!b & d), i),
                    1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                    2 => (b ^ c ^ d, (3 * i + 5) % 16),
                    _ => (c ^ (b | !d), (7 * i) % 16),
                };
                let rotated = a
                    .wrapping_add(f)
                    .wrapping_add(k[i])
                    .wrapping_add(m[g])
                    .rotate_left(S[i]);
                a = d;
                d = c;
                c = b;
                b = b.wrapping_add(rotated);
            }
            for (s, v) in state.iter_mut().zip([a, b, c, d]) {
                *s = s.wrapping_add(v);
            }
        }
        let mut out = [0u8; 16];
        for (i, s) in state.iter().enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&s.to_le_bytes());
        }
        out
    }

    #[test]
    fn the_md5_oracle_is_md5() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(
            md5_hex(b"The quick brown fox jumps over the lazy dog"),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
    }

    fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    /// The server side of SCRAM-SHA-256 (RFC 5802/7677) for `password`; `honest` false makes
    /// it sign with the wrong key, as an impostor that does not know the password would.
    struct ScramServer {
        salted: Vec<u8>,
        client_first_bare: String,
        server_first: String,
    }

    impl ScramServer {
        /// Reads the client's SASLInitialResponse, returns the server-first message.
        fn first(password: &str, initial: &[u8]) -> (ScramServer, String) {
            let messages = server::frontend_messages(initial);
            assert_eq!(messages.len(), 1);
            let (tag, body) = &messages[0];
            assert_eq!(*tag, b'p');
            let mechanism_end = body.iter().position(|b| *b == 0).unwrap();
            assert_eq!(&body[..mechanism_end], b"SCRAM-SHA-256");
            let data = &body[mechanism_end + 5..];
            let client_first = std::str::from_utf8(data).unwrap();
            // No channel binding, as the connection's TLS connector cannot provide it.
            let client_first_bare = client_first.strip_prefix("n,,").unwrap().to_string();
            let client_nonce = client_first_bare.strip_prefix("n=,r=").unwrap();
            let salt = b"pgcache-salt";
            let iterations = 4096u32;
            let server_first = format!(
                "r={client_nonce}SERVERNONCE,s={},i={iterations}",
                STANDARD.encode(salt)
            );
            // Hi(password, salt, i): PBKDF2 with HMAC-SHA-256, one block.
            let mut block = salt.to_vec();
            block.extend(1u32.to_be_bytes());
            let mut u = hmac(password.as_bytes(), &block);
            let mut salted = u.clone();
            for _ in 1..iterations {
                u = hmac(password.as_bytes(), &u);
                for (s, x) in salted.iter_mut().zip(&u) {
                    *s ^= x;
                }
            }
            let server = ScramServer {
                salted,
                client_first_bare,
                server_first: server_first.clone(),
            };
            (server, server_first)
        }

        /// Checks the client's proof; the server-final message, or None when it is wrong.
        fn last(&self, response: &[u8], honest: bool) -> Option<String> {
            let messages = server::frontend_messages(response);
            assert_eq!(messages[0].0, b'p');
            let client_final = std::str::from_utf8(&messages[0].1).unwrap();
            let (without_proof, proof) = client_final.split_once(",p=").unwrap();
            assert!(without_proof.starts_with("c=biws,r="), "{without_proof}");
            let auth_message = format!(
                "{},{},{without_proof}",
                self.client_first_bare, self.server_first
            );
            let client_key = hmac(&self.salted, b"Client Key");
            let stored_key = Sha256::digest(&client_key);
            let signature = hmac(&stored_key, auth_message.as_bytes());
            let expected: Vec<u8> = client_key
                .iter()
                .zip(&signature)
                .map(|(k, s)| k ^ s)
                .collect();
            if STANDARD.decode(proof).unwrap() != expected {
                return None;
            }
            let server_key = hmac(&self.salted, b"Server Key");
            let key = if honest {
                &server_key[..]
            } else {
                b"not the key"
            };
            Some(format!(
                "v={}",
                STANDARD.encode(hmac(key, auth_message.as_bytes()))
            ))
        }
    }

    fn sasl_offer() -> Backend {
        auth(10, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0")
    }

    fn scram(
        client_password: &str,
        server_password: &str,
        honest: bool,
    ) -> Result<Startup, AuthError> {
        let (mut startup, _) = Startup::new(&[], "ann", Some(client_password.into()))?;
        let Step::Send(initial) = startup.step(sasl_offer())? else {
            panic!("no initial response");
        };
        let (server, server_first) = ScramServer::first(server_password, &initial);
        let Step::Send(response) = startup.step(auth(11, server_first.as_bytes()))? else {
            panic!("no response");
        };
        match server.last(&response, honest) {
            Some(server_final) => {
                assert_eq!(startup.step(auth(12, server_final.as_bytes()))?, Step::Wait);
                Ok(startup)
            }
            None => startup
                .step(message(
                    b'E',
                    b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"ann\"\0\0",
                ))
                .map(|_| unreachable!()),
        }
    }

    #[test]
    fn scram_proves_the_password_both_ways() {
        let mut startup = scram("s3cret", "s3cret", true).unwrap();
        finish_start_up(&mut startup);
    }

    #[test]
    fn scram_with_a_wrong_password_is_the_servers_refusal() {
        let Err(AuthError::Server(e)) = scram("wrong", "s3cret", true) else {
            panic!("accepted");
        };
        assert_eq!((e.code.as_str(), e.is_fatal()), ("28P01", true));
    }

    #[test]
    fn scram_refuses_a_server_that_does_not_know_the_password() {
        let Err(AuthError::Protocol(why)) = scram("s3cret", "s3cret", false) else {
            panic!("accepted");
        };
        assert!(
            why.starts_with("SCRAM-SHA-256 authentication failed"),
            "{why}"
        );
    }

    #[test]
    fn scram_answers_out_of_turn_are_refused() {
        let (mut startup, _) = Startup::new(&[], "ann", Some("pw".into())).unwrap();
        startup.step(sasl_offer()).unwrap();
        let Err(AuthError::Protocol(why)) = startup.step(auth(0, b"")) else {
            panic!("accepted");
        };
        assert!(why.contains("SCRAM's first answer"), "{why}");
    }

    #[test]
    fn a_missing_password_and_unsupported_methods_are_clear_errors() {
        for request in [auth(3, b""), auth(5, &[0; 4]), sasl_offer()] {
            let (mut startup, _) = Startup::new(&[], "ann", None).unwrap();
            assert_eq!(
                startup.step(request),
                Err(AuthError::Protocol(
                    "PostgreSQL asks for a password and none is set (pg_password, PGPASSWORD or \
                     a passfile)"
                        .into()
                ))
            );
        }
        let (mut startup, _) = Startup::new(&[], "ann", Some("pw".into())).unwrap();
        let Err(AuthError::Protocol(why)) = startup.step(auth(7, b"")) else {
            panic!("accepted GSS");
        };
        assert!(why.contains("does not support (code 7)"), "{why}");
        let (mut startup, _) = Startup::new(&[], "ann", Some("pw".into())).unwrap();
        let Err(AuthError::Protocol(why)) = startup.step(auth(10, b"SCRAM-SHA-256-PLUS\0\0"))
        else {
            panic!("accepted PLUS only");
        };
        assert_eq!(
            why,
            "PostgreSQL offers no authentication pgcache supports (SCRAM-SHA-256-PLUS)"
        );
    }

    #[test]
    fn a_refusal_ends_the_start_up() {
        let (mut startup, _) = Startup::new(&[], "ann", None).unwrap();
        let refusal = message(
            b'E',
            b"SFATAL\0VFATAL\0C3D000\0Mdatabase \"x\" does not exist\0\0",
        );
        let Err(AuthError::Server(e)) = startup.step(refusal) else {
            panic!("accepted");
        };
        assert_eq!(e.code, "3D000");
        assert!(startup.step(auth(0, b"")).is_err());
    }
}
