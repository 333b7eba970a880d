//! Editing a JSON value at a path: what the property tests of untrusted
//! records share (mutating one field of a real record).

use serde_json::Value;

/// The value at `path` (object keys and array indices) in `v`.
pub fn slot<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| match v {
        Value::Object(m) => m.get_mut(k),
        Value::Array(a) => a.get_mut(k.parse::<usize>().ok()?),
        _ => None,
    })
}

/// Sets the value at `path` to `x` (nothing if there is none).
pub fn set_at(v: &mut Value, path: &[String], x: &Value) {
    if let Some(s) = slot(v, path) {
        *s = x.clone();
    }
}

/// Removes the field at `path` (nothing if its parent is not an object).
pub fn drop_at(v: &mut Value, path: &[String]) {
    if let Some((last, parent)) = path.split_last() {
        if let Some(Value::Object(o)) = slot(v, parent) {
            o.remove(last);
        }
    }
}
