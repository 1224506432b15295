//! PostgreSQL's stored query trees (`pg_node_tree`: a view's rewrite rule, a row-level
//! security policy, a SQL function's `BEGIN ATOMIC` body), read as PostgreSQL's own reader
//! reads them (`nodes/read.c`), for what a cached result depends on besides the rows of the
//! tables it reads. Pure: the catalog hands the text in (`catalog`) and says what the oids
//! found here are.
//!
//! The text is `nodeToString`'s (`nodes/outfuncs.c`): a node is `{LABEL :field value ...}`,
//! a list `(...)`, an oid list `(o 1 2)`, a NULL pointer `<>`; tokens end at whitespace or
//! at `(){}`, and a backslash makes the next character part of the token. Only the fields
//! below are read; everything else is skipped token by token, so a field PostgreSQL adds
//! in a later version changes nothing here.

use std::collections::BTreeSet;

/// What a stored tree uses that decides whether its result can be cached.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    /// Relations its range tables read (`RANGETBLENTRY` of kind relation: `:relid`).
    pub relations: BTreeSet<u32>,
    /// Functions it calls, however it calls them (`:funcid`, an operator's `:opfuncid`,
    /// a window frame's in-range functions, ...), aggregates and window functions aside.
    pub functions: BTreeSet<u32>,
    /// Aggregate functions (`:aggfnoid`).
    pub aggregates: BTreeSet<u32>,
    /// Window functions (`:winfnoid`).
    pub windows: BTreeSet<u32>,
    /// Operators named without their function (a row comparison's `:opnos`, a sort's
    /// `:sortop` and `:eqop`, ...): their functions are looked up in `pg_operator`.
    pub operators: BTreeSet<u32>,
    /// Types a value is converted to through its text form (`COERCEVIAIO :resulttype`, an
    /// XMLTABLE's columns): the type's input function runs when the statement does (`'now'`
    /// read as a timestamp).
    pub text_input_types: BTreeSet<u32>,
    /// Domains a value is checked against (`COERCETODOMAIN :resulttype`): their CHECK
    /// constraints run when the statement does.
    pub domains: BTreeSet<u32>,
    /// SQL value functions (`CURRENT_TIMESTAMP`, `CURRENT_USER`, ...), by their `:op`.
    pub value_functions: BTreeSet<i64>,
    /// System columns read (`VAR :varattno` below zero).
    pub system_columns: BTreeSet<i64>,
    /// A relation is sampled (`TABLESAMPLE`).
    pub table_sample: bool,
    /// Node kinds that read something other than rows (`NEXTVALUEEXPR`, `CURRENTOFEXPR`).
    pub other: BTreeSet<String>,
}

/// The SQL value function a `SQLVALUEFUNCTION :op` number stands for (PostgreSQL 14 and 15
/// `SQLValueFunctionOp`; 16 made the user functions into function calls, which the
/// volatility check sees).
pub fn value_function_name(op: i64) -> &'static str {
    match op {
        0 => "CURRENT_DATE",
        1 | 2 => "CURRENT_TIME",
        3 | 4 => "CURRENT_TIMESTAMP",
        5 | 6 => "LOCALTIME",
        7 | 8 => "LOCALTIMESTAMP",
        9 => "CURRENT_ROLE",
        10 => "CURRENT_USER",
        11 => "USER",
        12 => "SESSION_USER",
        13 => "CURRENT_CATALOG",
        14 => "CURRENT_SCHEMA",
        _ => "an SQL value function",
    }
}

/// The system column an attribute number below zero stands for.
pub fn system_column_name(attno: i64) -> &'static str {
    match attno {
        -1 => "ctid",
        -2 => "xmin",
        -3 => "cmin",
        -4 => "xmax",
        -5 => "cmax",
        -6 => "tableoid",
        _ => "a system column",
    }
}

/// Whether a system column's value moves only with the changes the feed reports: `tableoid`
/// never does, `xmin` with each new row version. `ctid` moves with VACUUM FULL and CLUSTER,
/// `xmax` with a row lock (SELECT FOR UPDATE, a foreign key check), `cmin`/`cmax` are the
/// writing transaction's own: none of those is a change any feed reports.
pub fn system_column_follows_changes(attno: i64) -> bool {
    matches!(attno, -2 | -6)
}

/// Fields holding a function's oid.
const FUNCTION_FIELDS: [&str; 6] = [
    "funcid",
    "opfuncid",
    "hashfuncid",
    "negfuncid",
    "startInRangeFunc",
    "endInRangeFunc",
];

/// Fields holding an operator's oid (or a list of them).
const OPERATOR_FIELDS: [&str; 5] = ["opno", "opnos", "eqop", "sortop", "cycle_mark_neop"];

/// What `text` (one or more stored trees) uses.
pub fn scan(text: &str) -> Found {
    let mut found = Found::default();
    let mut nodes: Vec<Node> = Vec::new();
    let mut field: Option<String> = None;
    // Inside a list that is a field's value: the field, and whether it is an oid list.
    let mut lists: Vec<(Option<String>, bool)> = Vec::new();
    let mut tokens = Tokens { text, at: 0 };
    while let Some(token) = tokens.next() {
        match token {
            "{" => {
                let label = tokens.next().unwrap_or_default().to_string();
                if matches!(label.as_str(), "NEXTVALUEEXPR" | "CURRENTOFEXPR") {
                    found.other.insert(label.clone());
                }
                if label == "TABLESAMPLECLAUSE" {
                    found.table_sample = true;
                }
                nodes.push(Node {
                    label,
                    rtekind: None,
                    relid: None,
                });
                field = None;
            }
            "}" => {
                if let Some(node) = nodes.pop()
                    && node.rtekind == Some(0)
                    && let Some(relid) = node.relid
                {
                    found.relations.insert(relid);
                }
                field = None;
            }
            "(" => {
                // An oid list holds operators' oids (`:opnos`); int, bitmapset and xid
                // lists hold none of what is read here.
                let typed = matches!(tokens.peek(), Some("o"));
                if matches!(tokens.peek(), Some("o" | "i" | "b" | "x")) {
                    tokens.next();
                }
                lists.push((field.take(), typed));
            }
            ")" => {
                lists.pop();
                field = None;
            }
            _ if token.starts_with(':') => field = Some(token[1..].to_string()),
            value => {
                let node = nodes.last_mut();
                match (&field, lists.last()) {
                    (Some(name), _) => {
                        if let Some(node) = node {
                            note(&mut found, node, name, value);
                        }
                        field = None;
                    }
                    (None, Some((Some(name), true))) => {
                        if let Some(node) = node {
                            note(&mut found, node, name, value);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    found
}

/// A node being read: its label, and what a range table entry says of its relation.
struct Node {
    label: String,
    rtekind: Option<i64>,
    relid: Option<u32>,
}

/// Records field `name`'s `value` in `node`.
fn note(found: &mut Found, node: &mut Node, name: &str, value: &str) {
    let oid = || value.parse::<u32>().ok().filter(|&oid| oid != 0);
    match (node.label.as_str(), name) {
        ("RANGETBLENTRY", "rtekind") => node.rtekind = value.parse().ok(),
        ("RANGETBLENTRY", "relid") => node.relid = oid(),
        ("SQLVALUEFUNCTION", "op") => {
            if let Ok(op) = value.parse() {
                found.value_functions.insert(op);
            }
        }
        ("VAR", "varattno") => {
            if let Ok(attno) = value.parse::<i64>()
                && attno < 0
            {
                found.system_columns.insert(attno);
            }
        }
        ("COERCEVIAIO", "resulttype") => found.text_input_types.extend(oid()),
        // XMLTABLE (and JSON_TABLE) read each column's text with its type's input function.
        ("TABLEFUNC", "coltypes") => found.text_input_types.extend(oid()),
        ("COERCETODOMAIN", "resulttype") => found.domains.extend(oid()),
        (_, "aggfnoid") => found.aggregates.extend(oid()),
        (_, "winfnoid") => found.windows.extend(oid()),
        (_, name) if FUNCTION_FIELDS.contains(&name) => found.functions.extend(oid()),
        (_, name) if OPERATOR_FIELDS.contains(&name) => found.operators.extend(oid()),
        _ => {}
    }
}

/// `pg_strtok`'s tokens: runs of characters up to whitespace or one of `(){}`, each of
/// those four alone; a backslash takes the next character into the token.
struct Tokens<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Tokens<'a> {
    fn peek(&self) -> Option<&'a str> {
        Tokens {
            text: self.text,
            at: self.at,
        }
        .next()
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        while self.at < bytes.len() && matches!(bytes[self.at], b' ' | b'\t' | b'\n' | b'\r') {
            self.at += 1;
        }
        if self.at >= bytes.len() {
            return None;
        }
        let start = self.at;
        if matches!(bytes[start], b'(' | b')' | b'{' | b'}') {
            self.at += 1;
            return Some(&self.text[start..self.at]);
        }
        while self.at < bytes.len()
            && !matches!(
                bytes[self.at],
                b' ' | b'\t' | b'\n' | b'\r' | b'(' | b')' | b'{' | b'}'
            )
        {
            self.at += if bytes[self.at] == b'\\' { 2 } else { 1 };
        }
        self.at = self.at.min(bytes.len());
        // A backslash before a multi-byte character: end on a character boundary.
        while !self.text.is_char_boundary(self.at) {
            self.at += 1;
        }
        Some(&self.text[start..self.at])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A view's rule as PostgreSQL 15 stores it (`CREATE VIEW upcoming AS SELECT id, ctid,
    /// xmin FROM events TABLESAMPLE BERNOULLI (50) WHERE at > CURRENT_TIMESTAMP AND (at, 0)
    /// < ('2024-01-01'::date, 1) AND note::timestamptz > 'now' AND "we ird" = 'a b\c"(d)'
    /// ORDER BY at`), shortened where it repeats itself.
    const VIEW: &str = r#"({QUERY :commandType 1 :querySource 0 :canSetTag true :utilityStmt <> :resultRelation 0 :hasAggs false :cteList <> :rtable ({RANGETBLENTRY :alias {ALIAS :aliasname old :colnames <>} :eref {ALIAS :aliasname old :colnames ("id" "ctid" "xmin")} :rtekind 0 :relid 16391 :relkind v :rellockmode 1 :tablesample <> :lateral false :inh false :inFromCl false :requiredPerms 0 :checkAsUser 0 :selectedCols (b) :insertedCols (b) :updatedCols (b) :extraUpdatedCols (b) :securityQuals <>} {RANGETBLENTRY :alias <> :eref {ALIAS :aliasname events :colnames ("id" "at" "note" "we\ ird")} :rtekind 0 :relid 16384 :relkind r :rellockmode 1 :tablesample {TABLESAMPLECLAUSE :tsmhandler 3313 :args ({FUNCEXPR :funcid 318 :funcresulttype 700 :funcretset false :funcvariadic false :funcformat 2 :funccollid 0 :inputcollid 0 :args ({CONST :consttype 23 :consttypmod -1 :constcollid 0 :constlen 4 :constbyval true :constisnull false :location 81 :constvalue 4 [ 50 0 0 0 0 0 0 0 ]}) :location -1}) :repeatable <>} :lateral false :inh true :inFromCl true :requiredPerms 2 :checkAsUser 0 :selectedCols (b 5 6 8 9 10 11) :insertedCols (b) :updatedCols (b) :extraUpdatedCols (b) :securityQuals <>}) :jointree {FROMEXPR :fromlist ({RANGETBLREF :rtindex 3}) :quals {BOOLEXPR :boolop and :args ({OPEXPR :opno 1324 :opfuncid 1157 :opresulttype 16 :opretset false :opcollid 0 :inputcollid 0 :args ({VAR :varno 3 :varattno 2 :vartype 1184 :vartypmod -1 :varcollid 0 :varlevelsup 0 :varnosyn 3 :varattnosyn 2 :location 91} {SQLVALUEFUNCTION :op 3 :type 1184 :typmod -1 :location 96}) :location 94} {ROWCOMPAREEXPR :rctype 1 :opnos (o 2384 97) :opfamilies (o 434 1976) :inputcollids (o 0 0) :largs ({VAR :varno 3 :varattno 2 :vartype 1184 :vartypmod -1 :varcollid 0 :varlevelsup 0 :varnosyn 3 :varattnosyn 2 :location 119}) :rargs ({CONST :consttype 1082 :consttypmod -1 :constcollid 0 :constlen 4 :constbyval true :constisnull false :location 129 :constvalue 4 [ 62 34 0 0 0 0 0 0 ]})} {OPEXPR :opno 1324 :opfuncid 1157 :opresulttype 16 :opretset false :opcollid 0 :inputcollid 0 :args ({COERCEVIAIO :arg {VAR :varno 3 :varattno 3 :vartype 25 :vartypmod -1 :varcollid 100 :varlevelsup 0 :varnosyn 3 :varattnosyn 3 :location 156} :resulttype 1184 :resultcollid 0 :coerceformat 1 :location 160} {CONST :consttype 1184 :consttypmod -1 :constcollid 0 :constlen 8 :constbyval true :constisnull false :location 176 :constvalue 8 [ -85 -37 -42 -76 27 4 3 0 ]}) :location 174} {OPEXPR :opno 98 :opfuncid 67 :opresulttype 16 :opretset false :opcollid 0 :inputcollid 100 :args ({VAR :varno 3 :varattno 4 :vartype 25 :vartypmod -1 :varcollid 100 :varlevelsup 0 :varnosyn 3 :varattnosyn 4 :location 186} {CONST :consttype 25 :consttypmod -1 :constcollid 100 :constlen -1 :constbyval false :constisnull false :location 197 :constvalue 13 [ 52 0 0 0 97 32 98 92 99 34 40 100 41 ]}) :location 195}) :location 114}} :targetList ({TARGETENTRY :expr {VAR :varno 3 :varattno 1 :vartype 23 :vartypmod -1 :varcollid 0 :varlevelsup 0 :varnosyn 3 :varattnosyn 1 :location 31} :resno 1 :resname id :ressortgroupref 0 :resorigtbl 16384 :resorigcol 1 :resjunk false} {TARGETENTRY :expr {VAR :varno 3 :varattno -1 :vartype 27 :vartypmod -1 :varcollid 0 :varlevelsup 0 :varnosyn 3 :varattnosyn -1 :location 35} :resno 2 :resname ctid :ressortgroupref 0 :resorigtbl 16384 :resorigcol -1 :resjunk false} {TARGETENTRY :expr {VAR :varno 3 :varattno -2 :vartype 28 :vartypmod -1 :varcollid 0 :varlevelsup 0 :varnosyn 3 :varattnosyn -2 :location 41} :resno 3 :resname xmin :ressortgroupref 0 :resorigtbl 16384 :resorigcol -2 :resjunk false}) :sortClause ({SORTGROUPCLAUSE :tleSortGroupRef 1 :eqop 1320 :sortop 1322 :nulls_first false :hashable true}) :limitOffset <> :stmt_location 0 :stmt_len 220})"#;

    #[test]
    fn a_view_s_rule_says_what_it_reads_and_calls() {
        let found = scan(VIEW);
        assert_eq!(found.relations, BTreeSet::from([16384, 16391]));
        assert_eq!(found.functions, BTreeSet::from([318, 1157, 67]));
        assert_eq!(
            found.operators,
            BTreeSet::from([1324, 2384, 97, 98, 1320, 1322])
        );
        assert_eq!(found.text_input_types, BTreeSet::from([1184]));
        assert_eq!(found.value_functions, BTreeSet::from([3]));
        assert_eq!(found.system_columns, BTreeSet::from([-1, -2]));
        assert!(found.table_sample);
        assert!(found.aggregates.is_empty() && found.windows.is_empty());
        assert_eq!(value_function_name(3), "CURRENT_TIMESTAMP");
        assert_eq!(system_column_name(-1), "ctid");
    }

    #[test]
    fn only_relations_of_relation_entries_count() {
        // A subquery's entry (rtekind 1) names no relation; a function's entry (3) neither.
        let found = scan(
            "({QUERY :rtable ({RANGETBLENTRY :rtekind 1 :subquery {QUERY :rtable \
             ({RANGETBLENTRY :rtekind 0 :relid 77 :relkind r :tablesample <>})}} \
             {RANGETBLENTRY :rtekind 3 :functions ({RANGETBLFUNCTION :funcexpr {FUNCEXPR \
             :funcid 1067 :args <>}})})})",
        );
        assert_eq!(found.relations, BTreeSet::from([77]));
        assert_eq!(found.functions, BTreeSet::from([1067]));
        assert!(!found.table_sample);
    }

    #[test]
    fn escaped_characters_stay_inside_their_token() {
        // A column named `x) :relid 5 {` must not read as structure.
        let found = scan(
            r#"({QUERY :rtable ({RANGETBLENTRY :eref {ALIAS :aliasname a\ \)\ \:relid\ 5\ \{ :colnames ("x\)\ \:funcid\ 9")} :rtekind 0 :relid 12 :tablesample <>})})"#,
        );
        assert_eq!(found.relations, BTreeSet::from([12]));
        assert!(found.functions.is_empty());
    }

    #[test]
    fn aggregates_windows_and_frames_are_told_apart() {
        let found = scan(
            "({QUERY :targetList ({TARGETENTRY :expr {AGGREF :aggfnoid 2147 :aggtype 20} } \
             {TARGETENTRY :expr {WINDOWFUNC :winfnoid 3100 :wintype 20}}) :windowClause \
             ({WINDOWCLAUSE :startInRangeFunc 4133 :endInRangeFunc 0 :inRangeColl 0}) \
             :cteList ({COMMONTABLEEXPR :cycle_clause {CTECYCLECLAUSE :cycle_mark_neop 85}})})",
        );
        assert_eq!(found.aggregates, BTreeSet::from([2147]));
        assert_eq!(found.windows, BTreeSet::from([3100]));
        assert_eq!(found.functions, BTreeSet::from([4133]));
        assert_eq!(found.operators, BTreeSet::from([85]));
    }

    #[test]
    fn an_xmltable_s_columns_are_read_from_text() {
        let found = scan(
            "({QUERY :rtable ({RANGETBLENTRY :rtekind 4 :tablefunc {TABLEFUNC :ns_uris <> \
             :colnames (\"at\") :coltypes (o 1184) :coltypmods (i -1) :colcollations (o 0)} \
             :coltypes (o 25)})})",
        );
        assert_eq!(found.text_input_types, BTreeSet::from([1184]));
    }

    #[test]
    fn only_xmin_and_tableoid_follow_the_changes() {
        assert!(system_column_follows_changes(-2));
        assert!(system_column_follows_changes(-6));
        for attno in [-1, -3, -4, -5] {
            assert!(!system_column_follows_changes(attno));
        }
    }
}
