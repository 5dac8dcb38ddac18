//! DynamoDB's published capacity rules, applied to the requests a client
//! actually sent. moto answers every request with a constant
//! ConsumedCapacity, so the benchmarks compute it themselves, the same way
//! for convo and for the peer: the captured wire JSON of each request (and
//! its response) goes through a [`Ledger`], which keeps a model of every
//! item written so that a write is billed on the larger of the item before
//! and after it, as DynamoDB bills it.
//!
//! The rules (DynamoDB developer guide, "Item sizes and formats" and "Read
//! and write capacity units"):
//! - an item's size is the sum of its attribute names' and values' sizes:
//!   a string its UTF-8 bytes, a number one byte per two significant digits
//!   plus one, binary its raw bytes, a boolean or null one byte, a list or
//!   map three bytes plus one per element plus the elements (a map's
//!   elements with their names), sets the sum of their members;
//! - a write costs one unit per started KB of the larger of the item before
//!   and after; in a transaction, twice that;
//! - each global secondary index whose entry the write creates, changes or
//!   removes costs a write of the entry (its keys, the table's keys, its
//!   projected attributes, and 100 bytes of overhead); a changed index key is
//!   a delete and a put. Index writes are billed at the standard rate;
//! - a read costs one unit per started 4 KB (a query sums the items it
//!   reads before rounding), half that when eventually consistent, twice
//!   that in a transaction.
//!
//! A write that fails its condition is billed the same units and changes
//! nothing, as in DynamoDB.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};

/// An item in DynamoDB's wire format: attribute name → `{"S": "…"}` etc.
pub type Item = Map<String, Value>;

const WRITE_UNIT: usize = 1024;
const READ_UNIT: usize = 4096;
const INDEX_ENTRY_OVERHEAD: usize = 100;

/// The size of one attribute value, without its name.
pub fn value_size(v: &Value) -> usize {
    let Some((kind, inner)) = v.as_object().and_then(|m| m.iter().next()) else {
        return 0;
    };
    match kind.as_str() {
        "S" => inner.as_str().map_or(0, str::len),
        "N" => inner.as_str().map_or(0, number_size),
        "B" => inner.as_str().map_or(0, base64_len),
        "BOOL" | "NULL" => 1,
        "SS" => strings(inner).map(str::len).sum(),
        "NS" => strings(inner).map(number_size).sum(),
        "BS" => strings(inner).map(base64_len).sum(),
        "L" => {
            3 + inner
                .as_array()
                .map_or(0, |l| l.iter().map(|e| 1 + value_size(e)).sum())
        }
        "M" => {
            3 + inner
                .as_object()
                .map_or(0, |m| m.iter().map(|(k, e)| 1 + k.len() + value_size(e)).sum())
        }
        _ => 0,
    }
}

fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

/// One byte per two significant digits (leading and trailing zeros
/// trimmed), plus one.
fn number_size(n: &str) -> usize {
    let digits: String = n
        .trim_start_matches(['-', '+'])
        .split(['e', 'E'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len().max(1);
    significant.div_ceil(2) + 1
}

fn base64_len(b: &str) -> usize {
    let body = b.trim_end_matches('=');
    body.len() * 3 / 4
}

/// An item's size: its attributes' names and values.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn units(size: usize, unit: usize) -> f64 {
    size.div_ceil(unit).max(1) as f64
}

/// What one or more requests cost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct Cost {
    /// Write units on the table (transactions counted double).
    pub write_units: f64,
    /// Write units on global secondary indexes.
    pub index_write_units: f64,
    pub read_units: f64,
    pub requests: usize,
    pub request_bytes: usize,
    pub response_bytes: usize,
}

impl Cost {
    pub fn add(&mut self, other: &Cost) {
        self.write_units += other.write_units;
        self.index_write_units += other.index_write_units;
        self.read_units += other.read_units;
        self.requests += other.requests;
        self.request_bytes += other.request_bytes;
        self.response_bytes += other.response_bytes;
    }

    /// Table and index writes together.
    pub fn all_writes(&self) -> f64 {
        self.write_units + self.index_write_units
    }
}

/// A global secondary index: its key attributes and what it projects.
#[derive(Debug, Clone)]
pub struct IndexShape {
    pub hash: String,
    pub range: Option<String>,
    pub projection: Projection,
}

#[derive(Debug, Clone)]
pub enum Projection {
    KeysOnly,
    Include(Vec<String>),
    All,
}

/// A table's key attributes and indexes.
#[derive(Debug, Clone)]
pub struct TableShape {
    pub hash: String,
    pub range: Option<String>,
    pub indexes: Vec<IndexShape>,
}

impl TableShape {
    /// From a DescribeTable (or CreateTable) `Table` description in wire
    /// JSON.
    pub fn from_description(table: &Value) -> Result<Self, String> {
        let (hash, range) = key_schema(&table["KeySchema"])?;
        let mut indexes = Vec::new();
        for gsi in table["GlobalSecondaryIndexes"].as_array().into_iter().flatten() {
            let (hash, range) = key_schema(&gsi["KeySchema"])?;
            let projection = match gsi["Projection"]["ProjectionType"].as_str() {
                Some("ALL") => Projection::All,
                Some("INCLUDE") => Projection::Include(
                    strings(&gsi["Projection"]["NonKeyAttributes"])
                        .map(str::to_string)
                        .collect(),
                ),
                _ => Projection::KeysOnly,
            };
            indexes.push(IndexShape {
                hash,
                range,
                projection,
            });
        }
        Ok(Self { hash, range, indexes })
    }

    fn key_of(&self, item: &Item) -> String {
        let mut key = vec![item.get(&self.hash).cloned().unwrap_or(Value::Null)];
        if let Some(r) = &self.range {
            key.push(item.get(r).cloned().unwrap_or(Value::Null));
        }
        Value::Array(key).to_string()
    }
}

fn key_schema(schema: &Value) -> Result<(String, Option<String>), String> {
    let mut hash = None;
    let mut range = None;
    for k in schema.as_array().into_iter().flatten() {
        let name = k["AttributeName"].as_str().map(str::to_string);
        match k["KeyType"].as_str() {
            Some("HASH") => hash = name,
            Some("RANGE") => range = name,
            _ => {}
        }
    }
    Ok((hash.ok_or("key schema without a hash key")?, range))
}

/// The model of every item written through it, and the rules.
#[derive(Debug, Default)]
pub struct Ledger {
    tables: HashMap<String, TableShape>,
    items: HashMap<(String, String), Item>,
    /// Table write units by kind of item (see [`item_kind`]).
    pub writes_by_kind: std::collections::BTreeMap<String, f64>,
}

/// A label for the kind of an item, from its key: the partition key's
/// prefix before `#` and the sort key's (`C#…`/`META` → `C/META`,
/// `C#…`/`M#…` → `C/M`); a key without such a prefix is its attribute name.
pub fn item_kind(shape: &TableShape, item: &Item) -> String {
    let part = |name: &str| -> String {
        match item.get(name).and_then(|v| v.get("S")).and_then(Value::as_str) {
            Some(s) => match s.split_once('#') {
                Some((p, _)) => p.to_string(),
                None if s.chars().all(|c| c.is_ascii_uppercase()) => s.to_string(),
                None => "…".into(),
            },
            None => name.to_string(),
        }
    };
    match &shape.range {
        Some(r) => format!("{}/{}", part(&shape.hash), part(r)),
        None => part(&shape.hash),
    }
}

impl Ledger {
    pub fn add_table(&mut self, name: &str, shape: TableShape) {
        self.tables.insert(name.to_string(), shape);
    }

    /// Adds a table known by its documented schema (the peer's), unless a
    /// description was already added.
    pub fn add_table_if_missing(&mut self, name: &str, shape: TableShape) {
        self.tables.entry(name.to_string()).or_insert(shape);
    }

    fn shape(&self, table: &str) -> Result<&TableShape, String> {
        self.tables
            .get(table)
            .ok_or_else(|| format!("table {table} is not in the ledger"))
    }

    fn current(&self, table: &str, key: &Item) -> Result<Option<&Item>, String> {
        let shape = self.shape(table)?;
        Ok(self.items.get(&(table.to_string(), shape.key_of(key))))
    }

    /// Bills one captured request. `response` is the response's wire JSON
    /// (an error response has `__type`); `request_bytes` and
    /// `response_bytes` are the bodies' lengths.
    pub fn apply(
        &mut self,
        op: &str,
        request: &Value,
        response: &Value,
        request_bytes: usize,
        response_bytes: usize,
    ) -> Result<Cost, String> {
        let failed = response.get("__type").is_some();
        let mut cost = Cost {
            requests: 1,
            request_bytes,
            response_bytes,
            ..Default::default()
        };
        let table = |r: &Value| {
            r["TableName"]
                .as_str()
                .map(str::to_string)
                .ok_or("request without TableName")
        };
        match op {
            "PutItem" => {
                let item = object(&request["Item"])?;
                self.write(&table(request)?, Write::Put(item), 1.0, failed, &mut cost)?;
            }
            "UpdateItem" => {
                self.write(&table(request)?, Write::Update(request), 1.0, failed, &mut cost)?;
            }
            "DeleteItem" => {
                let key = object(&request["Key"])?;
                self.write(&table(request)?, Write::Delete(key), 1.0, failed, &mut cost)?;
            }
            "BatchWriteItem" => {
                for (name, requests) in request["RequestItems"].as_object().into_iter().flatten() {
                    for r in requests.as_array().into_iter().flatten() {
                        if let Some(put) = r.get("PutRequest") {
                            self.write(name, Write::Put(object(&put["Item"])?), 1.0, failed, &mut cost)?;
                        } else if let Some(del) = r.get("DeleteRequest") {
                            self.write(name, Write::Delete(object(&del["Key"])?), 1.0, failed, &mut cost)?;
                        }
                    }
                }
            }
            "TransactWriteItems" => {
                for entry in request["TransactItems"].as_array().into_iter().flatten() {
                    if let Some(put) = entry.get("Put") {
                        self.write(&table(put)?, Write::Put(object(&put["Item"])?), 2.0, failed, &mut cost)?;
                    } else if let Some(update) = entry.get("Update") {
                        self.write(&table(update)?, Write::Update(update), 2.0, failed, &mut cost)?;
                    } else if let Some(delete) = entry.get("Delete") {
                        self.write(
                            &table(delete)?,
                            Write::Delete(object(&delete["Key"])?),
                            2.0,
                            failed,
                            &mut cost,
                        )?;
                    } else if let Some(check) = entry.get("ConditionCheck") {
                        let key = object(&check["Key"])?;
                        let size = self.current(&table(check)?, &key)?.map_or(0, item_size);
                        cost.write_units += 2.0 * units(size, WRITE_UNIT);
                    }
                }
            }
            "GetItem" => {
                let key = object(&request["Key"])?;
                let size = self
                    .current(&table(request)?, &key)?
                    .map(item_size)
                    .or_else(|| response["Item"].as_object().map(item_size))
                    .unwrap_or(0);
                cost.read_units += read_units(size, consistent(request), 1.0);
            }
            "BatchGetItem" => {
                for (name, spec) in request["RequestItems"].as_object().into_iter().flatten() {
                    let strong = consistent(spec);
                    for key in spec["Keys"].as_array().into_iter().flatten() {
                        let size = self.current(name, &object(key)?)?.map_or(0, item_size);
                        cost.read_units += read_units(size, strong, 1.0);
                    }
                }
            }
            "Query" | "Scan" => {
                let name = table(request)?;
                let on_index = request.get("IndexName").is_some();
                let mut total = 0;
                for returned in response["Items"].as_array().into_iter().flatten() {
                    let returned = object(returned)?;
                    // A query on the table reads whole items whatever it
                    // projects; one on a keys-only index reads its entries.
                    let size = match on_index {
                        false => self
                            .current(&name, &returned)?
                            .map_or_else(|| item_size(&returned), item_size),
                        true => item_size(&returned),
                    };
                    total += size;
                }
                cost.read_units += read_units(total, consistent(request), 1.0);
            }
            "TransactGetItems" => {
                for entry in request["TransactItems"].as_array().into_iter().flatten() {
                    let get = &entry["Get"];
                    let size = self.current(&table(get)?, &object(&get["Key"])?)?.map_or(0, item_size);
                    cost.read_units += read_units(size, true, 2.0);
                }
            }
            // Control-plane requests (DescribeTable, CreateTable…) cost no
            // capacity units; they are still counted as requests.
            _ => {}
        }
        Ok(cost)
    }

    fn write(
        &mut self,
        table: &str,
        write: Write<'_>,
        factor: f64,
        failed: bool,
        cost: &mut Cost,
    ) -> Result<(), String> {
        let shape = self.shape(table)?.clone();
        let (key_item, after) = match write {
            Write::Put(item) => (item.clone(), Some(item)),
            Write::Delete(key) => (key, None),
            Write::Update(request) => {
                let key = object(&request["Key"])?;
                let before = self.current(table, &key)?.cloned().unwrap_or_else(|| key.clone());
                (key, Some(apply_update(before, request)?))
            }
        };
        let id = (table.to_string(), shape.key_of(&key_item));
        let before = self.items.get(&id);
        let size = before.map_or(0, item_size).max(after.as_ref().map_or(0, item_size));
        cost.write_units += factor * units(size, WRITE_UNIT);
        *self.writes_by_kind.entry(item_kind(&shape, &key_item)).or_default() += factor * units(size, WRITE_UNIT);
        for index in &shape.indexes {
            cost.index_write_units += index_writes(&shape, index, before, after.as_ref());
        }
        if !failed {
            match after {
                Some(item) => {
                    self.items.insert(id, item);
                }
                None => {
                    self.items.remove(&id);
                }
            }
        }
        Ok(())
    }
}

enum Write<'a> {
    Put(Item),
    Delete(Item),
    Update(&'a Value),
}

fn object(v: &Value) -> Result<Item, String> {
    v.as_object().cloned().ok_or_else(|| "expected an item".to_string())
}

fn consistent(request: &Value) -> bool {
    request["ConsistentRead"].as_bool().unwrap_or(false)
}

fn read_units(size: usize, consistent: bool, factor: f64) -> f64 {
    let u = units(size, READ_UNIT) * factor;
    if consistent { u } else { u / 2.0 }
}

/// The index entry of `item`, if it has the index's keys.
fn index_entry(table: &TableShape, index: &IndexShape, item: &Item) -> Option<Item> {
    let mut entry = Item::new();
    for name in std::iter::once(&index.hash).chain(index.range.as_ref()) {
        entry.insert(name.clone(), item.get(name)?.clone());
    }
    for name in std::iter::once(&table.hash).chain(table.range.as_ref()) {
        if let Some(v) = item.get(name) {
            entry.insert(name.clone(), v.clone());
        }
    }
    match &index.projection {
        Projection::KeysOnly => {}
        Projection::Include(names) => {
            for n in names {
                if let Some(v) = item.get(n) {
                    entry.insert(n.clone(), v.clone());
                }
            }
        }
        Projection::All => entry = item.clone(),
    }
    Some(entry)
}

fn index_writes(table: &TableShape, index: &IndexShape, before: Option<&Item>, after: Option<&Item>) -> f64 {
    let old = before.and_then(|i| index_entry(table, index, i));
    let new = after.and_then(|i| index_entry(table, index, i));
    let cost = |e: &Item| units(item_size(e) + INDEX_ENTRY_OVERHEAD, WRITE_UNIT);
    let key = |e: &Item| {
        (
            e.get(&index.hash).cloned(),
            index.range.as_ref().and_then(|r| e.get(r).cloned()),
        )
    };
    match (old, new) {
        (None, None) => 0.0,
        (Some(o), None) => cost(&o),
        (None, Some(n)) => cost(&n),
        (Some(o), Some(n)) if key(&o) != key(&n) => cost(&o) + cost(&n),
        (Some(o), Some(n)) if o != n => cost(&o).max(cost(&n)),
        _ => 0.0,
    }
}

/// Applies the subset of update expressions convo and the peer send: `SET
/// a = :v` (or `= b`, `= if_not_exists(a, :v)`), `ADD a :n` (numbers and
/// sets), `REMOVE a`. Anything else is an error, so that a cost is never
/// silently wrong.
pub fn apply_update(mut item: Item, request: &Value) -> Result<Item, String> {
    let expr = request["UpdateExpression"]
        .as_str()
        .ok_or("UpdateItem without UpdateExpression")?;
    let names = request["ExpressionAttributeNames"].as_object();
    let values = request["ExpressionAttributeValues"].as_object();
    let name = |token: &str| -> Result<String, String> {
        match token.strip_prefix('#') {
            Some(_) => names
                .and_then(|n| n.get(token))
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("undefined name {token}")),
            None if token.contains(['.', '[']) => Err(format!("nested paths are not modelled: {token}")),
            None => Ok(token.to_string()),
        }
    };
    let value = |token: &str| -> Result<Value, String> {
        values
            .and_then(|v| v.get(token))
            .cloned()
            .ok_or_else(|| format!("undefined value {token}"))
    };
    for (clause, actions) in clauses(expr)? {
        for action in actions {
            match clause.as_str() {
                "SET" => {
                    let (target, operand) = action
                        .split_once('=')
                        .ok_or_else(|| format!("bad SET action {action}"))?;
                    let target = name(target.trim())?;
                    let operand = operand.trim();
                    let v = if operand.starts_with(':') {
                        value(operand)?
                    } else if let Some(args) = operand.strip_prefix("if_not_exists(").and_then(|r| r.strip_suffix(')'))
                    {
                        let (path, default) = args.split_once(',').ok_or("bad if_not_exists")?;
                        match item.get(&name(path.trim())?) {
                            Some(v) => v.clone(),
                            None => value(default.trim())?,
                        }
                    } else if operand.contains(['(', '+', '-']) {
                        return Err(format!("SET operand not modelled: {operand}"));
                    } else {
                        item.get(&name(operand)?)
                            .cloned()
                            .ok_or("SET from a missing attribute")?
                    };
                    item.insert(target, v);
                }
                "ADD" => {
                    let mut parts = action.split_whitespace();
                    let (Some(target), Some(operand), None) = (parts.next(), parts.next(), parts.next()) else {
                        return Err(format!("bad ADD action {action}"));
                    };
                    let target = name(target)?;
                    let added = value(operand)?;
                    let merged = add(item.get(&target), &added)?;
                    item.insert(target, merged);
                }
                "REMOVE" => {
                    item.remove(&name(action.trim())?);
                }
                other => return Err(format!("{other} clauses are not modelled")),
            }
        }
    }
    Ok(item)
}

/// Splits an update expression into its clauses and each clause's actions
/// (commas inside parentheses do not split).
fn clauses(expr: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    let flush = |out: &mut Vec<(String, Vec<String>)>, current: &mut String| -> Result<(), String> {
        let action = current.trim().to_string();
        current.clear();
        if action.is_empty() {
            return Ok(());
        }
        out.last_mut().ok_or("an action before any clause")?.1.push(action);
        Ok(())
    };
    for word in expr.split_inclusive(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')') {
        let bare = word.trim_end_matches(|c: char| c.is_whitespace());
        let upper = bare.to_ascii_uppercase();
        if depth == 0 && matches!(upper.as_str(), "SET" | "ADD" | "REMOVE" | "DELETE") {
            flush(&mut out, &mut current)?;
            out.push((upper, Vec::new()));
            continue;
        }
        for c in word.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if c == ',' && depth == 0 {
                flush(&mut out, &mut current)?;
            } else {
                current.push(c);
            }
        }
    }
    flush(&mut out, &mut current)?;
    Ok(out)
}

fn add(existing: Option<&Value>, added: &Value) -> Result<Value, String> {
    let number = |v: &Value| v.get("N").and_then(Value::as_str).map(str::to_string);
    if let Some(n) = number(added) {
        let base = existing.and_then(number).unwrap_or_else(|| "0".into());
        let sum = match (base.parse::<i128>(), n.parse::<i128>()) {
            (Ok(a), Ok(b)) => (a + b).to_string(),
            _ => {
                let a: f64 = base.parse().map_err(|_| "bad number")?;
                let b: f64 = n.parse().map_err(|_| "bad number")?;
                (a + b).to_string()
            }
        };
        return Ok(serde_json::json!({ "N": sum }));
    }
    for kind in ["SS", "NS", "BS"] {
        if let Some(new) = added.get(kind).and_then(Value::as_array) {
            let mut members: Vec<Value> = existing
                .and_then(|e| e.get(kind))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for m in new {
                if !members.contains(m) {
                    members.push(m.clone());
                }
            }
            return Ok(serde_json::json!({ kind: members }));
        }
    }
    Err("ADD of a type that is not modelled".into())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn item(v: Value) -> Item {
        v.as_object().expect("object").clone()
    }

    fn ledger() -> Ledger {
        let mut l = Ledger::default();
        l.add_table(
            "t",
            TableShape::from_description(&json!({
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                "GlobalSecondaryIndexes": [{
                    "IndexName": "byUser",
                    "KeySchema": [{"AttributeName": "gpk", "KeyType": "HASH"}, {"AttributeName": "gsk", "KeyType": "RANGE"}],
                    "Projection": {"ProjectionType": "KEYS_ONLY"}
                }]
            }))
            .expect("shape"),
        );
        l
    }

    #[test]
    fn sizes_follow_the_published_rules() {
        // The developer guide's rules, attribute by attribute.
        assert_eq!(item_size(&item(json!({"name": {"S": "héllo"}}))), 4 + 6);
        assert_eq!(value_size(&json!({"N": "123.4500"})), 3 + 1); // 12345: 5 digits
        assert_eq!(value_size(&json!({"N": "-0.001"})), 1 + 1);
        assert_eq!(value_size(&json!({"BOOL": true})), 1);
        assert_eq!(value_size(&json!({"B": "aGVsbG8="})), 5);
        assert_eq!(
            value_size(&json!({"L": [{"S": "ab"}, {"N": "7"}]})),
            3 + (1 + 2) + (1 + 2)
        );
        assert_eq!(value_size(&json!({"M": {"k": {"S": "ab"}}})), 3 + 1 + 1 + 2);
        assert_eq!(value_size(&json!({"SS": ["a", "bc"]})), 3);
    }

    #[test]
    fn writes_bill_the_larger_of_before_and_after_per_started_kb() {
        let mut l = ledger();
        let big = "x".repeat(1500);
        let put =
            |body: &str| json!({"TableName": "t", "Item": {"pk": {"S": "a"}, "sk": {"S": "1"}, "body": {"S": body}}});
        let c = l.apply("PutItem", &put(&big), &json!({}), 0, 0).expect("put");
        assert_eq!(c.write_units, 2.0);
        // Smaller after, but the item before was 1.5 KB.
        let c = l.apply("PutItem", &put("small"), &json!({}), 0, 0).expect("put");
        assert_eq!(c.write_units, 2.0);
        let c = l.apply("PutItem", &put("small"), &json!({}), 0, 0).expect("put");
        assert_eq!(c.write_units, 1.0);
    }

    #[test]
    fn transactions_double_and_failures_change_nothing() {
        let mut l = ledger();
        let tx = json!({"TransactItems": [
            {"Put": {"TableName": "t", "Item": {"pk": {"S": "a"}, "sk": {"S": "1"}}}},
            {"Put": {"TableName": "t", "Item": {"pk": {"S": "a"}, "sk": {"S": "2"}}}}
        ]});
        let failed = l
            .apply(
                "TransactWriteItems",
                &tx,
                &json!({"__type": "TransactionCanceledException"}),
                0,
                0,
            )
            .expect("tx");
        assert_eq!(failed.write_units, 4.0);
        let get = json!({"TableName": "t", "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}}, "ConsistentRead": true});
        assert!(l.current("t", &object(&get["Key"]).unwrap()).unwrap().is_none());
        let ok = l.apply("TransactWriteItems", &tx, &json!({}), 0, 0).expect("tx");
        assert_eq!(ok.write_units, 4.0);
        assert!(l.current("t", &object(&get["Key"]).unwrap()).unwrap().is_some());
    }

    #[test]
    fn index_writes_only_when_the_entry_changes() {
        let mut l = ledger();
        let put = |gsk: &str, body: &str| json!({"TableName": "t", "Item": {"pk": {"S": "a"}, "sk": {"S": "M"}, "gpk": {"S": "u"}, "gsk": {"S": gsk}, "body": {"S": body}}});
        assert_eq!(
            l.apply("PutItem", &put("1", "x"), &json!({}), 0, 0)
                .unwrap()
                .index_write_units,
            1.0
        );
        // Keys-only: a change outside the keys does not touch the index.
        assert_eq!(
            l.apply("PutItem", &put("1", "y"), &json!({}), 0, 0)
                .unwrap()
                .index_write_units,
            0.0
        );
        // A changed index key is a delete and a put.
        assert_eq!(
            l.apply("PutItem", &put("2", "y"), &json!({}), 0, 0)
                .unwrap()
                .index_write_units,
            2.0
        );
    }

    #[test]
    fn reads_round_per_4kb_and_halve_when_eventually_consistent() {
        let mut l = ledger();
        for i in 0..3 {
            let body = "x".repeat(2000);
            let put =
                json!({"TableName": "t", "Item": {"pk": {"S": "a"}, "sk": {"S": i.to_string()}, "b": {"S": body}}});
            l.apply("PutItem", &put, &json!({}), 0, 0).unwrap();
        }
        let key = json!({"pk": {"S": "a"}, "sk": {"S": "0"}});
        let strong = l
            .apply(
                "GetItem",
                &json!({"TableName": "t", "Key": key, "ConsistentRead": true}),
                &json!({}),
                0,
                0,
            )
            .unwrap();
        assert_eq!(strong.read_units, 1.0);
        let eventual = l
            .apply("GetItem", &json!({"TableName": "t", "Key": key}), &json!({}), 0, 0)
            .unwrap();
        assert_eq!(eventual.read_units, 0.5);
        // A query sums the items it reads (≈ 6 KB) before rounding: 2 units.
        let items: Vec<Value> = (0..3)
            .map(|i| json!({"pk": {"S": "a"}, "sk": {"S": i.to_string()}}))
            .collect();
        let q = l
            .apply(
                "Query",
                &json!({"TableName": "t", "ConsistentRead": true}),
                &json!({"Items": items}),
                0,
                0,
            )
            .unwrap();
        assert_eq!(q.read_units, 2.0);
    }

    #[test]
    fn updates_apply_set_add_and_remove() {
        let mut l = ledger();
        let update = json!({
            "TableName": "t",
            "Key": {"pk": {"S": "U"}, "sk": {"S": "STATS"}},
            "UpdateExpression": "ADD messages :m, hits :one SET #ttl = :ttl, userId = if_not_exists(userId, :u)",
            "ExpressionAttributeNames": {"#ttl": "ttl"},
            "ExpressionAttributeValues": {":m": {"N": "2"}, ":one": {"N": "1"}, ":ttl": {"N": "99"}, ":u": {"S": "child"}}
        });
        l.apply("UpdateItem", &update, &json!({}), 0, 0).unwrap();
        l.apply("UpdateItem", &update, &json!({}), 0, 0).unwrap();
        let key = item(json!({"pk": {"S": "U"}, "sk": {"S": "STATS"}}));
        let stored = l.current("t", &key).unwrap().unwrap().clone();
        assert_eq!(stored["messages"], json!({"N": "4"}));
        assert_eq!(stored["hits"], json!({"N": "2"}));
        assert_eq!(stored["ttl"], json!({"N": "99"}));
        assert_eq!(stored["userId"], json!({"S": "child"}));
        let remove = json!({"TableName": "t", "Key": key, "UpdateExpression": "remove hits"});
        l.apply("UpdateItem", &remove, &json!({}), 0, 0).unwrap();
        assert!(!l.current("t", &key).unwrap().unwrap().contains_key("hits"));
        let unknown = json!({"TableName": "t", "Key": key, "UpdateExpression": "SET a = b + :c", "ExpressionAttributeValues": {":c": {"N": "1"}}});
        assert!(l.apply("UpdateItem", &unknown, &json!({}), 0, 0).is_err());
    }
}
