//! What the dashboards test needs to know about PromQL and Grafana: the metric names an expression selects, and
//! Grafana's variables (`$name`, `${name}`, `$__rate_interval`, ...) replaced by values.

use std::collections::{BTreeMap, BTreeSet};

/// Aggregation operators: a name followed by `by`/`without` or `(` that is not a metric.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Keywords that take a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Keywords that are neither metrics nor functions.
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];

/// One label matcher of a vector selector: `label op "value"` (the value as written, quotes removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub label: String,
    pub op: String,
    pub value: String,
}

/// One vector selector: the metric name (from before the braces or a `__name__="..."` matcher) and its other
/// matchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub name: String,
    pub matchers: Vec<Matcher>,
}

/// The metric names `expr` selects: every vector selector's name and every `__name__="..."` matcher. An
/// expression that picks metrics by a regular expression on `__name__` cannot be checked and is an error.
pub fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    Ok(selectors(expr)?.into_iter().map(|s| s.name).collect())
}

/// The vector selectors of `expr`, each with its metric name and label matchers.
pub fn selectors(expr: &str) -> Result<Vec<Selector>, String> {
    let c: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let next_non_space = |mut j: usize| {
        while j < c.len() && c[j].is_whitespace() {
            j += 1;
        }
        j
    };
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '#' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '"' || ch == '\'' || ch == '`' {
            i = skip_string(&c, i)?;
        } else if ch == '{' {
            let (end, ms) = matchers(&c, i)?;
            let (names, matchers): (Vec<Matcher>, Vec<Matcher>) =
                ms.into_iter().partition(|m| m.label == "__name__");
            let name = names
                .into_iter()
                .next()
                .ok_or_else(|| format!("a selector without a metric name at {i}"))?
                .value;
            out.push(Selector { name, matchers });
            i = end;
        } else if ch == '[' {
            while i < c.len() && c[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if ch.is_ascii_digit()
            || (ch == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration (5m, 1e3, 0x1f).
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.') {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let lower = word.to_ascii_lowercase();
            let after = next_non_space(i);
            if LABEL_LISTS.contains(&lower.as_str()) {
                if c.get(after) == Some(&'(') {
                    i = after;
                    while i < c.len() && c[i] != ')' {
                        i += 1;
                    }
                    i += 1;
                }
            } else if KEYWORDS.contains(&lower.as_str())
                || AGGREGATIONS.contains(&lower.as_str())
                || c.get(after) == Some(&'(')
            {
                // an operator, an aggregation or a function call: its arguments are read on
            } else if c.get(after) == Some(&'{') {
                let (end, matchers) = matchers(&c, after)?;
                if matchers.iter().any(|m| m.label == "__name__") {
                    return Err(format!("{word} has a second name in its __name__ matcher"));
                }
                out.push(Selector {
                    name: word,
                    matchers,
                });
                i = end;
            } else {
                out.push(Selector {
                    name: word,
                    matchers: Vec::new(),
                });
            }
        } else {
            i += 1;
        }
    }
    Ok(out)
}

/// The index after the string literal starting at `i`.
fn skip_string(c: &[char], i: usize) -> Result<usize, String> {
    let quote = c[i];
    let mut j = i + 1;
    while j < c.len() {
        if c[j] == '\\' && quote != '`' {
            j += 2;
            continue;
        }
        if c[j] == quote {
            return Ok(j + 1);
        }
        j += 1;
    }
    Err(format!("unterminated string at {i}"))
}

/// Reads the label matchers starting at `{` (index `i`): the index after `}` and the matchers. A regular
/// expression on `__name__` is an error (the names it selects cannot be checked).
fn matchers(c: &[char], i: usize) -> Result<(usize, Vec<Matcher>), String> {
    let mut j = i + 1;
    let mut out = Vec::new();
    loop {
        while j < c.len() && (c[j].is_whitespace() || c[j] == ',') {
            j += 1;
        }
        match c.get(j) {
            None => return Err("unterminated {".into()),
            Some('}') => return Ok((j + 1, out)),
            _ => {}
        }
        let start = j;
        while j < c.len() && (c[j].is_ascii_alphanumeric() || c[j] == '_') {
            j += 1;
        }
        let label: String = c[start..j].iter().collect();
        while j < c.len() && c[j].is_whitespace() {
            j += 1;
        }
        let op_start = j;
        while j < c.len() && matches!(c[j], '=' | '!' | '~') {
            j += 1;
        }
        let op: String = c[op_start..j].iter().collect();
        while j < c.len() && c[j].is_whitespace() {
            j += 1;
        }
        if label.is_empty() || op.is_empty() || !matches!(c.get(j), Some('"' | '\'' | '`')) {
            return Err(format!("cannot read the label matcher at {start}"));
        }
        let end = skip_string(c, j)?;
        if label == "__name__" && op != "=" {
            return Err("a regular expression on __name__ cannot be checked".into());
        }
        out.push(Matcher {
            label,
            op,
            value: c[j + 1..end - 1].iter().collect(),
        });
        j = end;
    }
}

/// The names in `referenced` that are not in `exported`, each with the query that names it.
pub fn unexported(
    queries: &[(String, String)],
    exported: &BTreeSet<String>,
) -> Result<Vec<String>, String> {
    let mut missing = Vec::new();
    for (what, expr) in queries {
        for name in metric_names(expr).map_err(|e| format!("{what}: {e}: {expr}"))? {
            if !exported.contains(&name) {
                missing.push(format!("{what}: {name} is not exported ({expr})"));
            }
        }
    }
    Ok(missing)
}

/// The label names of each metric and the values of each label, over the series a Prometheus holds.
pub type Labels = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// The matchers of `queries` that cannot select anything `labels` holds: a label the metric does not carry (a
/// misspelt label behind `or vector(0)` returns data all the same), or an `=` to a value that no series has for
/// that label, of this metric or any other (a gauge that exports only its current state, such as the coordinator's
/// liveness, has no series for a state that did not occur; the agent's, which exports every state, has).
/// Metrics missing from `labels` are left to [`unexported`]; `label=""` (the label is absent) always can match.
pub fn unmatched(queries: &[(String, String)], labels: &Labels) -> Result<Vec<String>, String> {
    let anywhere = |label: &str, value: &str| {
        labels
            .values()
            .any(|m| m.get(label).is_some_and(|v| v.contains(value)))
    };
    let mut out = Vec::new();
    for (what, expr) in queries {
        for s in selectors(expr).map_err(|e| format!("{what}: {e}: {expr}"))? {
            let Some(known) = labels.get(&s.name) else {
                continue;
            };
            for m in &s.matchers {
                if m.op == "=" && m.value.is_empty() {
                    continue;
                }
                match known.get(&m.label) {
                    None => out.push(format!(
                        "{what}: {} has no label {} (it has {:?}) ({expr})",
                        s.name,
                        m.label,
                        known.keys().collect::<Vec<_>>()
                    )),
                    Some(values) if m.op == "=" && !anywhere(&m.label, &m.value) => {
                        out.push(format!(
                            "{what}: no series has {}=\"{}\" (values of {}: {values:?}) ({expr})",
                            m.label, m.value, s.name
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
    }
    Ok(out)
}

/// Replaces Grafana's variables in `text`: `$name` and `${name}` by `vars[name]`. A variable that is not in
/// `vars` is an error (a panel naming a variable the dashboard does not define).
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        if c[i] != '$' {
            out.push(c[i]);
            i += 1;
            continue;
        }
        let (name, end) = if c.get(i + 1) == Some(&'{') {
            let close = c[i..]
                .iter()
                .position(|&x| x == '}')
                .ok_or_else(|| format!("unterminated ${{ in {text}"))?;
            (
                c[i + 2..i + close].iter().collect::<String>(),
                i + close + 1,
            )
        } else {
            let mut j = i + 1;
            while j < c.len() && (c[j].is_ascii_alphanumeric() || c[j] == '_') {
                j += 1;
            }
            (c[i + 1..j].iter().collect::<String>(), j)
        };
        let value = vars
            .get(&name)
            .ok_or_else(|| format!("unknown variable ${name} in {text}"))?;
        out.push_str(value);
        i = end;
    }
    Ok(out)
}

/// A regular expression matching exactly `values` (Grafana's formatting of a multi-value variable).
pub fn regex_of(values: &[String]) -> String {
    let escaped: Vec<String> = values
        .iter()
        .map(|v| {
            v.chars()
                .flat_map(|ch| {
                    let special = "\\.+*?()|[]{}^$".contains(ch);
                    special.then_some('\\').into_iter().chain(Some(ch))
                })
                .collect()
        })
        .collect();
    match escaped.as_slice() {
        [one] => one.clone(),
        _ => format!("({})", escaped.join("|")),
    }
}

/// The series name of a `label_values(metric, label)` variable query: (metric selector, label).
pub fn label_values_query(query: &str) -> Option<(String, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (metric, label) = inner.rsplit_once(',')?;
    Some((metric.trim().to_string(), label.trim().to_string()))
}

/// Grafana's legend: `{{label}}` replaced by the series' label values (an empty format: the label set).
pub fn legend(format: &str, labels: &BTreeMap<String, String>) -> String {
    if format.trim().is_empty() {
        let inner: Vec<String> = labels
            .iter()
            .filter(|(k, _)| k.as_str() != "__name__")
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        return format!(
            "{}{{{}}}",
            labels.get("__name__").cloned().unwrap_or_default(),
            inner.join(", ")
        );
    }
    let mut out = format.to_string();
    while let Some(start) = out.find("{{") {
        let Some(len) = out[start..].find("}}") else {
            break;
        };
        let key = out[start + 2..start + len].trim().to_string();
        let value = labels.get(&key).cloned().unwrap_or_default();
        out.replace_range(start..start + len + 2, &value);
    }
    out
}
