//! Binding: each operand typed by the table's columns and the statement's parameters,
//! each piece whose types are not read here made `Unknown` with its reason.

use super::*;

/// An operand's type once bound: a type, or a constant that takes the other operand's.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Typing {
    ty: Option<SqlType>,
    /// It comes from a column (its collation wins over a parameter's).
    from_column: bool,
}

impl Pred {
    /// The condition with every operand typed, and every piece not decided here made
    /// `Unknown` with its reason.
    pub fn bind(self, scope: &dyn Scope) -> Pred {
        match self {
            Pred::Unknown(_) => self,
            Pred::And(items) => Pred::And(items.into_iter().map(|p| p.bind(scope)).collect()),
            Pred::Or(items) => Pred::Or(items.into_iter().map(|p| p.bind(scope)).collect()),
            Pred::Not(inner) => Pred::Not(Box::new(inner.bind(scope))),
            Pred::Test(inner, test) => Pred::Test(Box::new(inner.bind(scope)), test),
            leaf => leaf.bind_leaf(scope).unwrap_or_else(Pred::Unknown),
        }
    }

    fn bind_leaf(self, scope: &dyn Scope) -> Result<Pred, String> {
        Ok(match self {
            Pred::Compare {
                op, left, right, ..
            } => {
                let (left, lt) = bind_expr(left, scope)?;
                let (right, rt) = bind_expr(right, scope)?;
                let ty = common_type(lt, rt)?;
                check_comparison(op, ty)?;
                Pred::Compare {
                    op,
                    left,
                    right,
                    ty,
                }
            }
            Pred::Quantified {
                op,
                left,
                array,
                all,
                ..
            } => {
                let (left, lt) = bind_expr(left, scope)?;
                let element = match &array {
                    Expr::Param(n) => {
                        let name = scope.param(*n).unwrap_or_default();
                        let Some(element) = name.strip_suffix("[]") else {
                            return Err(format!("ANY/ALL of a parameter of type {name}"));
                        };
                        Typing {
                            ty: Some(typed(element, scope.default_collation())?),
                            from_column: false,
                        }
                    }
                    Expr::Const(Some(_), Literal::Untyped) => Typing {
                        ty: None,
                        from_column: false,
                    },
                    _ => return Err("ANY/ALL of an array other than a parameter".into()),
                };
                let ty = common_type(lt, element)?;
                check_comparison(op, ty)?;
                Pred::Quantified {
                    op,
                    left,
                    array,
                    all,
                    ty,
                }
            }
            // Whether a column is NULL is known of every type the change carries, but a
            // row's: `(,)` is NULL too (every field is), and pgcache does not read rows.
            Pred::IsNull(Expr::Column(name)) => {
                scope
                    .column(&name)
                    .ok_or_else(|| format!("column {name:?}, which the table does not have"))?;
                if scope.row_valued(&name) {
                    return Err(format!(
                        "IS NULL of a composite column ({name}), TRUE when all its fields are NULL"
                    ));
                }
                Pred::IsNull(Expr::Column(name))
            }
            Pred::IsNull(arg) => Pred::IsNull(bind_expr(arg, scope)?.0),
            Pred::Boolean(arg) => {
                let (arg, t) = bind_expr(arg, scope)?;
                if t.ty != Some(SqlType::Bool) {
                    return Err("a condition that is not a boolean column".into());
                }
                Pred::Boolean(arg)
            }
            Pred::Like {
                text,
                pattern,
                fold,
                ..
            } => {
                let (text, tt) = bind_expr(text, scope)?;
                let (pattern, pt) = bind_expr(pattern, scope)?;
                let ty = common_type(tt, pt)?;
                let SqlType::Text(collation) = ty else {
                    return Err("LIKE on a value that is not text".into());
                };
                if !collation.deterministic {
                    return Err("LIKE on text under a nondeterministic collation".into());
                }
                if fold && !collation.ascii_folding {
                    return Err(
                        "ILIKE under a collation whose case folding pgcache does not compute"
                            .into(),
                    );
                }
                Pred::Like {
                    text,
                    pattern,
                    fold,
                    ty,
                }
            }
            Pred::Regex {
                text,
                pattern,
                fold,
            } => {
                let (text, tt) = bind_expr(text, scope)?;
                let (pattern, pt) = bind_expr(pattern, scope)?;
                let SqlType::Text(collation) = common_type(tt, pt)? else {
                    return Err("a regular expression on a value that is not text".into());
                };
                if !collation.deterministic || (fold && !collation.ascii_folding) {
                    return Err(
                        "a regular expression under a collation pgcache does not compute".into(),
                    );
                }
                Pred::Regex {
                    text,
                    pattern,
                    fold,
                }
            }
            Pred::JsonKeys { doc, keys, how } => {
                let (doc, dt) = bind_expr(doc, scope)?;
                let (keys, kt) = bind_expr(keys, scope)?;
                let want = if how == Keys::One {
                    matches!(kt.ty, None | Some(SqlType::Text(_)))
                } else {
                    matches!(kt.ty, None | Some(SqlType::TextArray))
                };
                if dt.ty != Some(SqlType::Jsonb) || !want {
                    return Err("a jsonb key operator on other types".into());
                }
                Pred::JsonKeys { doc, keys, how }
            }
            Pred::JsonContains { doc, part } => {
                let (doc, dt) = bind_expr(doc, scope)?;
                let (part, pt) = bind_expr(part, scope)?;
                if common_type(dt, pt)? != SqlType::Jsonb {
                    return Err("@> on a value that is not jsonb".into());
                }
                Pred::JsonContains { doc, part }
            }
            other => other,
        })
    }
}

/// The SQL type of a format_type name, or why it is not read here.
fn typed(name: &str, collation: Collation) -> Result<SqlType, String> {
    match SqlType::named(name, collation) {
        SqlType::Unresolved => Err(format!("a value of type {name}")),
        ty => Ok(ty),
    }
}

fn bind_expr(expr: Expr, scope: &dyn Scope) -> Result<(Expr, Typing), String> {
    let default = scope.default_collation();
    Ok(match expr {
        Expr::Column(name) => {
            let (type_name, collation) = scope
                .column(&name)
                .ok_or_else(|| format!("column {name:?}, which the table does not have"))?;
            let ty = typed(&type_name, collation)
                .map_err(|_| format!("a column of type {type_name} ({name})"))?;
            (
                Expr::Column(name),
                Typing {
                    ty: Some(ty),
                    from_column: true,
                },
            )
        }
        Expr::Param(n) => {
            let name = scope.param(n).unwrap_or_default();
            let ty = typed(&name, default).map_err(|_| format!("a parameter of type {name}"))?;
            (
                Expr::Param(n),
                Typing {
                    ty: Some(ty),
                    from_column: false,
                },
            )
        }
        Expr::Const(text, literal) => {
            let ty = match literal {
                Literal::Number => Some(SqlType::Number),
                Literal::Bool => Some(SqlType::Bool),
                Literal::Untyped => None,
            };
            (
                Expr::Const(text, literal),
                Typing {
                    ty,
                    from_column: false,
                },
            )
        }
        Expr::Fold { upper, arg, .. } => {
            let (arg, t) = bind_expr(*arg, scope)?;
            let collation = match t.ty {
                None => default,
                Some(SqlType::Text(c)) => c,
                Some(_) => return Err("upper/lower of a value that is not text".into()),
            };
            (
                Expr::Fold {
                    upper,
                    arg: Box::new(arg),
                    collation,
                },
                Typing {
                    ty: Some(SqlType::Text(collation)),
                    from_column: t.from_column,
                },
            )
        }
        Expr::Concat(a, b) => {
            let (a, at) = bind_expr(*a, scope)?;
            let (b, bt) = bind_expr(*b, scope)?;
            let ty = common_type(at, bt).and_then(|ty| match ty {
                SqlType::Text(_) => Ok(ty),
                _ => Err("|| of values that are not text".to_string()),
            });
            let ty = match (at.ty, bt.ty) {
                (None, None) => SqlType::Text(default),
                _ => ty?,
            };
            (
                Expr::Concat(Box::new(a), Box::new(b)),
                Typing {
                    ty: Some(ty),
                    from_column: at.from_column || bt.from_column,
                },
            )
        }
        Expr::JsonField {
            doc, key, as_text, ..
        } => {
            let (doc, dt) = bind_expr(*doc, scope)?;
            let (key, kt) = bind_expr(*key, scope)?;
            let keyed = matches!(kt.ty, None | Some(SqlType::Text(_)) | Some(SqlType::Number));
            if dt.ty != Some(SqlType::Jsonb) || !keyed {
                return Err("-> or ->> on what is not jsonb by a key or an index".into());
            }
            let ty = if as_text {
                SqlType::Text(default)
            } else {
                SqlType::Jsonb
            };
            (
                Expr::JsonField {
                    doc: Box::new(doc),
                    key: Box::new(key),
                    as_text,
                    index: kt.ty == Some(SqlType::Number),
                },
                Typing {
                    ty: Some(ty),
                    from_column: false,
                },
            )
        }
        Expr::Trunc { unit, arg } => {
            let (unit, ut) = bind_expr(*unit, scope)?;
            let (arg, t) = bind_expr(*arg, scope)?;
            if !matches!(ut.ty, None | Some(SqlType::Text(_))) || t.ty != Some(SqlType::Timestamp) {
                return Err(
                    "date_trunc of what is not a timestamp without time zone (with one, the \
                     session's time zone decides it)"
                        .into(),
                );
            }
            (
                Expr::Trunc {
                    unit: Box::new(unit),
                    arg: Box::new(arg),
                },
                Typing {
                    ty: Some(SqlType::Timestamp),
                    from_column: t.from_column,
                },
            )
        }
        Expr::AtZone { zone, arg, .. } => {
            let (zone, zt) = bind_expr(*zone, scope)?;
            let (arg, t) = bind_expr(*arg, scope)?;
            let (to_zoned, ty) = match (zt.ty, t.ty) {
                (None | Some(SqlType::Text(_)), Some(SqlType::Timestamp)) => {
                    (true, SqlType::TimestampTz)
                }
                (None | Some(SqlType::Text(_)), Some(SqlType::TimestampTz)) => {
                    (false, SqlType::Timestamp)
                }
                _ => {
                    return Err("AT TIME ZONE of what is not a timestamp, or by an interval".into());
                }
            };
            (
                Expr::AtZone {
                    zone: Box::new(zone),
                    arg: Box::new(arg),
                    to_zoned,
                },
                Typing {
                    ty: Some(ty),
                    from_column: t.from_column,
                },
            )
        }
        Expr::DateOf(arg) => {
            let (arg, t) = bind_expr(*arg, scope)?;
            (
                Expr::DateOf(Box::new(arg)),
                Typing {
                    ty: Some(SqlType::Date),
                    ..t
                },
            )
        }
        Expr::Cast(arg, to) => {
            let target = typed(&to, default).map_err(|_| format!("a cast to {to}"))?;
            let (arg, t) = bind_expr(*arg, scope)?;
            // A timestamp's date: its day, whatever the session's time zone.
            if t.ty == Some(SqlType::Timestamp)
                && target == SqlType::Date
                && !matches!(arg, Expr::Param(_))
            {
                return Ok((
                    Expr::DateOf(Box::new(arg)),
                    Typing {
                        ty: Some(SqlType::Date),
                        from_column: t.from_column,
                    },
                ));
            }
            let ty = match (t.ty, target) {
                // A constant or parameter is read by the target type's input.
                (None, target) => target,
                (Some(_), _) if matches!(arg, Expr::Param(_)) => {
                    if t.ty != Some(target) {
                        return Err(format!("a parameter cast to {to}"));
                    }
                    target
                }
                // text to text keeps the value; its collation is the target's default,
                // known only when it is the value's own.
                (Some(SqlType::Text(c)), SqlType::Text(d)) => {
                    SqlType::Text(if c == d { c } else { Collation::UNKNOWN })
                }
                // An integer or numeric read as numeric keeps its value; read as an
                // integer type, it is rounded (`eval`). Floats are refused above: float to
                // integer rounds half to even, and float to numeric prints the float.
                (Some(SqlType::Number), SqlType::Number) if to == "numeric" => target,
                (Some(from), _) if from == target => target,
                _ => return Err(format!("a cast to {to}")),
            };
            (
                Expr::Cast(Box::new(arg), to),
                Typing {
                    ty: Some(ty),
                    from_column: t.from_column,
                },
            )
        }
    })
}

/// The type two operands compare as.
fn common_type(a: Typing, b: Typing) -> Result<SqlType, String> {
    match (a.ty, b.ty) {
        (None, None) => Err("a comparison of two constants".into()),
        (Some(t), None) | (None, Some(t)) => Ok(t),
        (Some(SqlType::Text(x)), Some(SqlType::Text(y))) => {
            Ok(SqlType::Text(match (a.from_column, b.from_column) {
                (true, false) => x,
                (false, true) => y,
                _ if x == y => x,
                _ => Collation::UNKNOWN,
            }))
        }
        (Some(x), Some(y)) if x.comparable(y) => Ok(x),
        (Some(x), Some(y)) => Err(format!("a comparison of {x:?} with {y:?}")),
    }
}

fn check_comparison(op: Cmp, ty: SqlType) -> Result<(), String> {
    match ty {
        SqlType::Text(c) if matches!(op, Cmp::Eq | Cmp::Ne) && !c.deterministic => {
            Err("= on text under a nondeterministic collation".into())
        }
        SqlType::Text(c) if !matches!(op, Cmp::Eq | Cmp::Ne) && !c.bytewise => Err(
            "an order comparison of text under a collation other than \"C\" (its order is a \
             locale's)"
                .into(),
        ),
        SqlType::Jsonb if matches!(op, Cmp::Eq | Cmp::Ne) => Ok(()),
        SqlType::Jsonb | SqlType::TextArray => Err(format!("{op:?} on {ty:?}")),
        _ => Ok(()),
    }
}
