//! Values PostgreSQL reads as the clock: the date/time inputs `now`, `today`, `tomorrow` and
//! `yesterday` (`utils/adt/datetime.c`), accepted by the input functions of `date`, `time`,
//! `timetz`, `timestamp` and `timestamptz` (and of the arrays, ranges, domains and composites
//! built on them) in any case, around blanks, and beside other fields (`'tomorrow 10:00'`).
//! A statement that hands such text to one of those types answers differently as time
//! passes, without any write. Pure.

/// The date/time types whose input reads those words: date, time, timestamp, timestamptz,
/// timetz (`pg_type` oids, fixed since PostgreSQL 7).
pub const CLOCK_TYPES: [u32; 5] = [1082, 1083, 1114, 1184, 1266];

/// The words that stand for the current time, or a day relative to it.
const WORDS: [&str; 4] = ["now", "today", "tomorrow", "yesterday"];

/// The first word of `text` a date/time input reads as the clock, if any. The input splits
/// its text into fields, a field of letters being one word (`ParseDateTime`), looked up in
/// lower case: `'Now'`, `' tomorrow 10:00'` and `'{today,2024-01-01}'` all have one;
/// `'nowhere'` and `'snow'` do not.
pub fn clock_word(text: &str) -> Option<&'static str> {
    text.split(|c: char| !c.is_ascii_alphabetic())
        .filter(|word| !word.is_empty())
        .find_map(|word| WORDS.iter().find(|w| w.eq_ignore_ascii_case(word)).copied())
}

/// Why a parameter or literal spelled `word` is refused.
pub fn refusal(what: &str, word: &str) -> String {
    format!(
        "{what} is {word:?}, which PostgreSQL reads as the current time when the statement \
         runs: a cached answer would outlive it; pass the time itself (such as \
         2024-05-01T10:00:00Z)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_words_are_found_in_any_case_and_beside_other_fields() {
        for (text, word) in [
            ("now", "now"),
            (" NOW ", "now"),
            ("Today", "today"),
            ("tomorrow 10:00", "tomorrow"),
            ("10:00 yesterday", "yesterday"),
            ("{today,2024-01-01}", "today"),
            ("[2024-01-01,now)", "now"),
            ("allballs today", "today"),
        ] {
            assert_eq!(clock_word(text), Some(word), "{text}");
        }
        for text in [
            "2024-01-01",
            "nowhere",
            "snow",
            "todays",
            "epoch",
            "infinity",
            "",
            "1 day",
        ] {
            assert_eq!(clock_word(text), None, "{text}");
        }
    }
}
