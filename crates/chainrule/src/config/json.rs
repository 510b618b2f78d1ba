//! Strict reading of JSON objects: every field typed, every unknown field an error
//! naming it (a typo must never be silently ignored).

use crate::error::invalid;
use crate::{Error, Result};
use serde_json::{Map, Value};

/// The fields of one JSON object, consumed as they are read; [`Fields::finish`]
/// rejects whatever is left.
pub(crate) struct Fields {
    path: String,
    map: Map<String, Value>,
    /// Every key asked for, in order: the valid names an unknown field is told.
    asked: Vec<String>,
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Fields {
    /// Takes `value` as an object; `path` names it in errors (`""` for the top level).
    pub(crate) fn new(path: &str, value: Value) -> Result<Fields> {
        match value {
            Value::Object(map) => Ok(Fields {
                path: path.to_string(),
                map,
                asked: Vec::new(),
            }),
            other => Err(invalid(
                if path.is_empty() { "(top level)" } else { path },
                format!("expected an object, got {}", kind(&other)),
            )),
        }
    }

    /// The dotted name of `key` inside this object.
    pub(crate) fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(crate) fn take(&mut self, key: &str) -> Option<Value> {
        if !self.asked.iter().any(|k| k == key) {
            self.asked.push(key.to_string());
        }
        self.map.remove(key)
    }

    fn expected(&self, key: &str, what: &str, got: &Value) -> Error {
        invalid(
            self.name(key),
            format!("expected {what}, got {}", kind(got)),
        )
    }

    /// An optional finite number.
    pub(crate) fn number(&mut self, key: &str) -> Result<Option<f64>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(v) if v.is_finite() => Ok(Some(v)),
                _ => Err(invalid(
                    self.name(key),
                    format!("{n} is not a finite number"),
                )),
            },
            Some(other) => Err(self.expected(key, "a number", &other)),
        }
    }

    /// An optional non-negative integer.
    pub(crate) fn count(&mut self, key: &str) -> Result<Option<u64>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) => Ok(Some(v)),
                None => Err(invalid(
                    self.name(key),
                    format!("expected a non-negative integer, got {n}"),
                )),
            },
            Some(other) => Err(self.expected(key, "an integer", &other)),
        }
    }

    /// An optional boolean.
    pub(crate) fn boolean(&mut self, key: &str) -> Result<Option<bool>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(self.expected(key, "true or false", &other)),
        }
    }

    /// An optional string.
    pub(crate) fn string(&mut self, key: &str) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.expected(key, "a string", &other)),
        }
    }

    /// A required string.
    pub(crate) fn required_string(&mut self, key: &str) -> Result<String> {
        self.string(key)?
            .ok_or_else(|| invalid(self.name(key), "is required"))
    }

    /// An optional pair of finite numbers (`[a, b]`).
    pub(crate) fn pair(&mut self, key: &str) -> Result<Option<(f64, f64)>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Array(items)) => match items.as_slice() {
                [Value::Number(a), Value::Number(b)] => match (a.as_f64(), b.as_f64()) {
                    (Some(a), Some(b)) if a.is_finite() && b.is_finite() => Ok(Some((a, b))),
                    _ => Err(invalid(self.name(key), "numbers must be finite")),
                },
                _ => Err(invalid(self.name(key), "expected an array of two numbers")),
            },
            Some(other) => Err(self.expected(key, "an array of two numbers", &other)),
        }
    }

    /// An optional non-negative integer or array of them (`3` or `[3, 5]`).
    pub(crate) fn counts(&mut self, key: &str) -> Result<Option<Vec<u64>>> {
        let bad = |f: &Self| {
            invalid(
                f.name(key),
                "expected a non-negative integer or an array of them",
            )
        };
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(|v| Some(vec![v])).ok_or_else(|| bad(self)),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_u64().ok_or_else(|| bad(self)))
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(_) => Err(bad(self)),
        }
    }

    /// Rejects any field not read, naming the fields that were (and the nearest
    /// of them, for a misspelling).
    pub(crate) fn finish(self) -> Result<()> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(key) => {
                let valid: Vec<&str> = self.asked.iter().map(String::as_str).collect();
                let hint = crate::nearest_name(key, &valid)
                    .map_or(String::new(), |n| format!("; did you mean {n}?"));
                Err(invalid(
                    self.name(key),
                    format!("unknown field (valid: {}{hint})", valid.join(", ")),
                ))
            }
        }
    }
}

/// Parses JSON text, naming `what` (a file) on a syntax error.
pub(crate) fn parse(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| invalid("(json)", format!("not valid JSON: {e}")))
}
