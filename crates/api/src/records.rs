//! `/zones/{id}/dns_records`: list, create, get, replace, patch, delete, batch, import, export.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::IntoResponse;
use parapet_model::record::{ChangingName, Conflict, SameName};
use parapet_model::zonefile::{ImportedRecord, export_zone_file, parse_zone_file};
use parapet_model::{DnsRecord, FieldError, ModelError, RecordDraft, RecordType, Zone, ids};
use parapet_snapshot::{ZoneSnapshot, record_key, record_prefix, zone_key};
use parapet_store::{StoreError, Txn};
use serde_json::{Map, Value, json};

use crate::envelope::{ApiErrorItem, ApiResult, now_timestamp, ok, parse_body};
use crate::listing::{Params, TextFilter, page_of, short};
use crate::stored::encode;
use crate::zones::{Access, authorized_zone, load_zone, unix_now};
use crate::{ApiError, ApiState, Auth};

/// A zone and its records, being changed in one transaction: the records as they were, and
/// the writes made since, so that a change to a large zone costs what it touches.
pub struct ZoneWrite {
    pub zone: Zone,
    /// The records before this change, sorted by name.
    base: Arc<ZoneSnapshot>,
    /// Records written (`None`: deleted) by this change, by id.
    written: BTreeMap<String, Option<DnsRecord>>,
    /// Ids of the records in `written` by owner name, in the order written (an id written again
    /// is listed again, and stays listed under a name it left): the zone rules only concern
    /// records sharing a name.
    written_by_name: HashMap<String, Vec<String>>,
    /// The names this change has checked a record at, indexed for the zone rules and kept up to
    /// date with every write: a batch of writes to a name holding many records costs what it
    /// writes.
    names: HashMap<String, NameAt>,
    /// The records an import created, as store keys and values: an import is a change of its
    /// own, so nothing reads them back (see [`ZoneWrite::import`]).
    imported: Vec<(String, Vec<u8>)>,
    /// Positions in `base` by record id, made once a change looks up more than a few records.
    by_id: std::cell::OnceCell<HashMap<String, usize>>,
    lookups: std::cell::Cell<usize>,
    /// The zone id and the time of the change, shared by every record written.
    zone_id: Arc<str>,
    now: Arc<str>,
    /// How many records the zone holds as this change leaves it.
    records: usize,
}

/// Lookups by id a change makes by scanning before it indexes the zone's records.
const SCANS: usize = 8;

fn conflict(c: Conflict) -> ApiError {
    ApiError::bad(c.code, c.message)
}

impl ZoneWrite {
    fn new(zone: Zone, base: Arc<ZoneSnapshot>, now: String) -> Self {
        Self {
            zone_id: zone.id.as_str().into(),
            now: now.into(),
            records: base.records.len(),
            zone,
            base,
            written: BTreeMap::new(),
            written_by_name: HashMap::new(),
            names: HashMap::new(),
            imported: Vec::new(),
            by_id: std::cell::OnceCell::new(),
            lookups: std::cell::Cell::new(0),
        }
    }

    /// The record `id` as this change leaves it.
    pub fn get(&self, id: &str) -> Option<&DnsRecord> {
        if let Some(written) = self.written.get(id) {
            return written.as_ref();
        }
        let records = &self.base.records;
        let scanned = self.lookups.replace(self.lookups.get() + 1);
        if scanned < SCANS && self.by_id.get().is_none() {
            return records.iter().find(|r| r.id == id).map(Arc::as_ref);
        }
        let by_id = self.by_id.get_or_init(|| {
            records
                .iter()
                .enumerate()
                .map(|(i, r)| (r.id.clone(), i))
                .collect()
        });
        by_id.get(id).map(|&i| records[i].as_ref())
    }

    /// The records at `name` as this change leaves them, in the order the zone rules see them:
    /// those kept from before, then those written, each where it was last written.
    fn at_name<'a>(&'a self, name: &'a str) -> Vec<&'a DnsRecord> {
        let kept = self
            .base
            .stored_at(name)
            .filter(|r| !self.written.contains_key(&r.id));
        let ids = self
            .written_by_name
            .get(name)
            .map_or(&[][..], Vec::as_slice);
        let mut seen = HashSet::new();
        let mut written: Vec<&DnsRecord> = ids
            .iter()
            .rev()
            .filter(|id| seen.insert(id.as_str()))
            .filter_map(|id| self.written.get(id)?.as_ref())
            .filter(|r| r.name == name)
            .collect();
        written.reverse();
        kept.chain(written).collect()
    }

    /// Refuses a write after an import, whose records this change no longer sees.
    fn not_imported(&self) -> Result<(), ApiError> {
        if self.imported.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Internal(
                "a zone file import is a change of its own".into(),
            ))
        }
    }

    /// Checks `draft` against the records at its name, except record `except`.
    fn check(&mut self, draft: &RecordDraft, except: Option<&str>) -> Result<(), ApiError> {
        if !self.names.contains_key(&draft.name) {
            let at = NameAt::of(&self.at_name(&draft.name));
            self.names.insert(draft.name.clone(), at);
        }
        let Some(at) = self.names.get(&draft.name) else {
            return Err(ApiError::Internal("a checked name is not indexed".into()));
        };
        let except = except.and_then(|id| at.position_of.get(id).copied());
        // Every write keeps the index up to date: a position it holds is a record at the name.
        let record = |i: usize| {
            self.get(&at.ids[i])
                .expect("the zone rules' index holds only records this change keeps")
        };
        let apex = draft.name == self.zone.name;
        at.rules
            .check((draft, apex), except, record)
            .map_err(conflict)
    }

    /// Writes record `id` (`None`: deletes it), which was `previous` before.
    fn write(&mut self, id: &str, previous: Option<&DnsRecord>, record: Option<DnsRecord>) {
        match (previous, &record) {
            (None, Some(_)) => self.records += 1,
            (Some(_), None) => self.records = self.records.saturating_sub(1),
            _ => {}
        }
        if let Some(previous) = previous
            && let Some(at) = self.names.get_mut(&previous.name)
            && let Some(position) = at.position_of.remove(id)
        {
            at.rules.remove(position, previous);
        }
        if let Some(r) = &record {
            self.written_by_name
                .entry(r.name.clone())
                .or_default()
                .push(id.to_owned());
            if let Some(at) = self.names.get_mut(&r.name) {
                at.add(r);
            }
        }
        self.written.insert(id.to_owned(), record);
    }

    /// A new record from `draft`, not yet written.
    fn new_record(&self, draft: RecordDraft) -> DnsRecord {
        draft.into_record(
            ids::new_id(),
            Arc::clone(&self.zone_id),
            Arc::clone(&self.now),
            Arc::clone(&self.now),
        )
    }

    pub fn create(&mut self, draft: RecordDraft) -> Result<DnsRecord, ApiError> {
        self.not_imported()?;
        self.check(&draft, None)?;
        let record = self.new_record(draft);
        self.write(&record.id.clone(), None, Some(record.clone()));
        Ok(record)
    }

    /// Creates a zone file's records, skipping those identical to a record already there; if
    /// any breaks a rule, each such line is reported and nothing is created. A large import
    /// holds a million records, so they are taken name by name (the rules concern records that
    /// share a name) and each is kept only as the store will hold it: no record, and no index
    /// by name or id, is kept for the whole file. The change sees none of them afterwards, so
    /// no other write may follow.
    pub fn import(&mut self, mut records: Vec<ImportedRecord>) -> Result<usize, ApiError> {
        self.not_imported()?;
        self.imported.reserve_exact(records.len());
        // Taken from the end in (name, line) order, so that the file's records are given up
        // while the stored form of the accepted ones grows: a large file is not held twice.
        records.sort_unstable_by(|a, b| (&b.draft.name, b.line).cmp(&(&a.draft.name, a.line)));
        let mut errors: Vec<(usize, String)> = Vec::new();
        let mut added = 0usize;
        let mut same_name = SameName::default();
        // The records created at the current name.
        let mut here: Vec<DnsRecord> = Vec::new();
        while let Some(first) = records.pop() {
            let name = first.draft.name.clone();
            let stored = self.at_name(&name);
            same_name.clear();
            for r in &stored {
                same_name.push(r);
            }
            let mut next = Some(first);
            while let Some(r) = next
                .take()
                .or_else(|| records.pop_if(|r| r.draft.name == name))
            {
                if records.len() < records.capacity() / 4 {
                    records.shrink_to_fit();
                }
                let at = |i: usize| {
                    stored
                        .get(i)
                        .copied()
                        .unwrap_or_else(|| &here[i - stored.len()])
                };
                match same_name.check((&r.draft, name == self.zone.name), None, at) {
                    Err(c) if c.code == 81058 => {}
                    Err(c) => errors.push((r.line, c.message)),
                    Ok(()) => {
                        let record = self.new_record(r.draft);
                        same_name.push(&record);
                        here.push(record);
                        added += 1;
                    }
                }
            }
            drop(stored);
            self.keep_imported(&mut here)?;
        }
        if !errors.is_empty() {
            errors.sort_by_key(|(line, _)| *line);
            let errors = errors
                .into_iter()
                .map(|(line, message)| FieldError::new(format!("line {line}"), message))
                .collect();
            return Err(zone_file_errors(&ModelError::ZoneFile(errors)));
        }
        self.records += added;
        Ok(added)
    }

    fn keep_imported(&mut self, records: &mut Vec<DnsRecord>) -> Result<(), ApiError> {
        for r in records.drain(..) {
            let value = encode(&r)?;
            self.imported
                .push((record_key(&self.zone_id, &r.id), value));
        }
        Ok(())
    }

    pub fn replace(&mut self, id: &str, draft: RecordDraft) -> Result<DnsRecord, ApiError> {
        self.not_imported()?;
        let existing = self.get(id).ok_or_else(ApiError::record_not_found)?.clone();
        self.check(&draft, Some(id))?;
        let record = draft.into_record(
            id.to_owned(),
            Arc::clone(&self.zone_id),
            Arc::clone(&existing.created_on),
            Arc::clone(&self.now),
        );
        self.write(id, Some(&existing), Some(record.clone()));
        Ok(record)
    }

    pub fn delete(&mut self, id: &str) -> Result<DnsRecord, ApiError> {
        self.not_imported()?;
        let record = self.get(id).ok_or_else(ApiError::record_not_found)?.clone();
        self.write(id, Some(&record), None);
        Ok(record)
    }
}

/// The records at one name, indexed for the zone rules (see [`ZoneWrite::check`]).
struct NameAt {
    rules: ChangingName,
    /// Record ids by position in `rules`.
    ids: Vec<String>,
    position_of: HashMap<String, usize>,
}

impl NameAt {
    fn of(records: &[&DnsRecord]) -> Self {
        let mut at = Self {
            rules: ChangingName::default(),
            ids: Vec::with_capacity(records.len()),
            position_of: HashMap::with_capacity(records.len()),
        };
        for r in records {
            at.add(r);
        }
        at
    }

    fn add(&mut self, record: &DnsRecord) {
        let position = self.rules.add(record);
        debug_assert_eq!(position, self.ids.len());
        self.ids.push(record.id.clone());
        self.position_of.insert(record.id.clone(), position);
    }
}

/// How long a write waits for the served snapshot to catch up with the zone it changes.
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The zone's records from the served snapshot, if it holds them as they are at `zone_rev`.
/// Every record write also writes the zone, so a snapshot at `zone_rev` or later that holds
/// this very zone holds its current records; reading them there spares reading the whole zone
/// from the store.
async fn served_zone(state: &ApiState, zone: &Zone, zone_rev: u64) -> Option<Arc<ZoneSnapshot>> {
    let published = &state.published;
    // Not followed: nothing is compiled on this node. Rejected: the snapshot is not catching up.
    if !published.followed() || !published.rejected().is_empty() {
        return None;
    }
    tokio::time::timeout(SNAPSHOT_WAIT, published.wait_for(zone_rev))
        .await
        .ok()?;
    let snapshot = published.load();
    let served = snapshot.zones.get(&zone.name)?;
    (served.zone == *zone).then(|| Arc::clone(served))
}

/// Runs `change` on the zone's current records and commits the result with the zone's serial
/// bumped, retrying from a fresh read if another writer got there first.
pub async fn mutate_zone<T>(
    state: &ApiState,
    zone_id: &str,
    change: impl Fn(&mut ZoneWrite) -> Result<T, ApiError>,
) -> Result<(T, Zone), ApiError> {
    for _ in 0..16 {
        let (zone, zone_rev) = load_zone(state, zone_id).await?;
        let base = match served_zone(state, &zone, zone_rev).await {
            Some(served) => served,
            None => {
                let mut records: Vec<Arc<DnsRecord>> = load_records(state, zone_id)
                    .await?
                    .into_iter()
                    .map(Arc::new)
                    .collect();
                records.sort_by(|a, b| a.name.cmp(&b.name));
                Arc::new(ZoneSnapshot::new(zone.clone(), records, Vec::new()))
            }
        };
        let mut write = ZoneWrite::new(zone, base, now_timestamp());
        let out = change(&mut write)?;
        if write.written.is_empty() && write.imported.is_empty() {
            return Ok((out, write.zone));
        }
        // A change that adds records may not take the zone past the quota (one that removes
        // some always may, whatever the zone holds).
        let quota = state.config.max_records_per_zone;
        if write.records > quota && write.records > write.base.records.len() {
            return Err(ApiError::bad(
                81045,
                format!(
                    "Record quota exceeded: a zone may hold {quota} records, and this change would leave {}",
                    write.records
                ),
            ));
        }
        write.zone.serial = write.zone.next_serial(unix_now());
        write.zone.modified_on = write.now.to_string();
        let mut txn = Txn::new()
            .expect(zone_key(zone_id), zone_rev)
            .put(zone_key(zone_id), encode(&write.zone)?);
        txn.ops
            .reserve_exact(write.written.len() + write.imported.len());
        // In key order, as `written` is: the store inserts into its tree in order.
        write.imported.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in std::mem::take(&mut write.imported) {
            txn = txn.put(key, value);
        }
        // Each record is dropped once encoded: a large change is not held twice.
        for (id, record) in std::mem::take(&mut write.written) {
            txn = match record {
                Some(r) => txn.put(record_key(zone_id, &id), encode(&r)?),
                None => txn.delete(record_key(zone_id, &id)),
            };
        }
        match state.store.commit(txn).await {
            Ok(_) => return Ok((out, write.zone)),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Store(StoreError::Conflict))
}

async fn load_records(state: &ApiState, zone_id: &str) -> Result<Vec<DnsRecord>, ApiError> {
    crate::stored::list(state, &record_prefix(zone_id)).await
}

fn draft(zone: &Zone, body: &Value) -> Result<RecordDraft, ApiError> {
    RecordDraft::from_json(&zone.name, body).map_err(|e| ApiError::record_fields(&e))
}

/// A PATCH body merged over the record's current fields.
fn merged(record: &DnsRecord, patch: &Value) -> Result<Value, ApiError> {
    let Some(patch) = patch.as_object() else {
        return Err(ApiError::bad(9207, "body: must be a JSON object"));
    };
    let mut base: Map<String, Value> = record.editable_json();
    if patch.contains_key("data") {
        base.remove("content");
    }
    if patch.contains_key("type") && !patch.contains_key("priority") {
        base.remove("priority");
    }
    for (k, v) in patch {
        // `"tags": null` leaves the tags as they are, as Cloudflare reads it: cloudflare-go
        // sends it with every update that sets no tags (DDNS updaters, external-dns).
        if k == "tags" && v.is_null() {
            continue;
        }
        base.insert(k.clone(), v.clone());
    }
    Ok(Value::Object(base))
}

pub async fn list(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    let params = Params::parse(raw.as_deref());
    let (page, per_page) = params.paging(100, 5_000_000)?;
    let any = params.match_any()?;
    let descending = params.descending()?;
    let zone_name = zone.name.clone();
    let full_name = move |v: &str| {
        let v = v.trim().trim_end_matches('.').to_ascii_lowercase();
        if v == "@" { zone_name.clone() } else { v }
    };
    let names = TextFilter::from_params(&params, "name", full_name);
    let contents = TextFilter::from_params(&params, "content", |v| v.trim().to_ascii_lowercase());
    let comments = TextFilter::from_params(&params, "comment", |v| v.to_ascii_lowercase());
    let kind = match params.get("type") {
        None => None,
        Some(t) => Some(RecordType::parse(t).ok_or_else(|| {
            ApiError::bad(
                9008,
                format!("type '{}' is not a supported record type", short(t)),
            )
        })?),
    };
    let proxied = params.boolean("proxied")?;
    let tags = crate::listing::TagFilter::from_params(&params);
    let tags_any = match params.get("tag_match") {
        None | Some("all") => false,
        Some("any") => true,
        Some(other) => {
            return Err(ApiError::bad(
                1004,
                format!("tag_match must be 'all' or 'any', not '{}'", short(other)),
            ));
        }
    };
    // (Present or absent: whatever the parameter's value says.)
    let comment_present = match (params.get("comment.present"), params.get("comment.absent")) {
        (Some(_), _) => Some(true),
        (None, Some(_)) => Some(false),
        (None, None) => None,
    };
    let search = params.get("search").map(str::to_ascii_lowercase);
    let order = params.get("order").unwrap_or("type");
    if !matches!(order, "type" | "name" | "content" | "ttl" | "proxied") {
        return Err(ApiError::bad(
            1004,
            format!(
                "order must be type, name, content, ttl or proxied, not '{}'",
                short(order)
            ),
        ));
    }
    let mut records: Vec<DnsRecord> = load_records(&state, &zone.id)
        .await?
        .into_iter()
        .filter(|r| {
            let mut tests: Vec<bool> = Vec::new();
            tests.extend(names.iter().map(|f| f.matches(&r.name)));
            tests.extend(contents.iter().map(|f| f.matches(&r.content)));
            tests.extend(
                comments
                    .iter()
                    .map(|f| f.matches(r.comment.as_deref().unwrap_or(""))),
            );
            if let Some(k) = kind {
                tests.push(r.kind == k);
            }
            if let Some(p) = proxied {
                tests.push(r.proxied == p);
            }
            if !tags.is_empty() {
                let mut passed = tags.iter().map(|f| f.matches(&r.tags));
                tests.push(if tags_any {
                    passed.any(|p| p)
                } else {
                    passed.all(|p| p)
                });
            }
            if let Some(present) = comment_present {
                tests.push(r.comment.as_deref().is_some_and(|c| !c.is_empty()) == present);
            }
            // The search stands apart from `match`, which joins the other filters (as
            // Cloudflare's list documents it).
            if let Some(text) = &search {
                let has = |v: &str| v.to_ascii_lowercase().contains(text.as_str());
                let found = has(&r.name)
                    || has(&r.content)
                    || r.comment.as_deref().is_some_and(has)
                    || r.tags.iter().any(|t| has(t));
                if !found {
                    return false;
                }
            }
            if tests.is_empty() {
                return true;
            }
            if any {
                tests.iter().any(|t| *t)
            } else {
                tests.iter().all(|t| *t)
            }
        })
        .collect();
    records.sort_by(|a, b| {
        let ordered = match order {
            "name" => a.name.cmp(&b.name),
            "content" => a.content.cmp(&b.content).then_with(|| a.name.cmp(&b.name)),
            "ttl" => a.ttl.cmp(&b.ttl).then_with(|| a.name.cmp(&b.name)),
            "proxied" => a.proxied.cmp(&b.proxied).then_with(|| a.name.cmp(&b.name)),
            _ => (a.kind.as_str().cmp(b.kind.as_str())).then_with(|| a.name.cmp(&b.name)),
        };
        ordered
            .then_with(|| a.content.cmp(&b.content))
            .then_with(|| a.id.cmp(&b.id))
    });
    if descending {
        records.reverse();
    }
    Ok(page_of(&records, page, per_page, |r| {
        r.to_api_json(&zone.name)
    }))
}

pub async fn create(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditDns).await?;
    let body = parse_body(&body)?;
    let d = draft(&zone, &body)?;
    let (record, zone) = mutate_zone(&state, &zone_id, |w| w.create(d.clone())).await?;
    Ok(ok(record.to_api_json(&zone.name)))
}

pub async fn get_one(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, record_id)): Path<(String, String)>,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    if !ids::is_id(&record_id) {
        return Err(ApiError::record_not_found());
    }
    let (record, _): (DnsRecord, _) =
        crate::stored::load(&state, &record_key(&zone_id, &record_id))
            .await?
            .ok_or_else(ApiError::record_not_found)?;
    Ok(ok(record.to_api_json(&zone.name)))
}

pub async fn replace(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, record_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditDns).await?;
    let body = parse_body(&body)?;
    let d = draft(&zone, &body)?;
    let (record, zone) =
        mutate_zone(&state, &zone_id, |w| w.replace(&record_id, d.clone())).await?;
    Ok(ok(record.to_api_json(&zone.name)))
}

pub async fn patch(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, record_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    authorized_zone(&state, &auth, &zone_id, Access::EditDns).await?;
    let body = parse_body(&body)?;
    let (record, zone) = mutate_zone(&state, &zone_id, |w| {
        let current = w.get(&record_id).ok_or_else(ApiError::record_not_found)?;
        let d = draft(&w.zone, &merged(current, &body)?)?;
        w.replace(&record_id, d)
    })
    .await?;
    Ok(ok(record.to_api_json(&zone.name)))
}

pub async fn delete(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, record_id)): Path<(String, String)>,
) -> ApiResult {
    authorized_zone(&state, &auth, &zone_id, Access::EditDns).await?;
    let (record, _) = mutate_zone(&state, &zone_id, |w| w.delete(&record_id)).await?;
    Ok(ok(json!({"id": record.id})))
}

/// Prefixes every error of a failed batch item with where it is in the batch.
fn at(place: String) -> impl Fn(ApiError) -> ApiError {
    move |e| match e {
        ApiError::BadRequest(items) => ApiError::BadRequest(
            items
                .into_iter()
                .map(|i| ApiErrorItem {
                    code: i.code,
                    message: format!("{place}: {}", i.message),
                })
                .collect(),
        ),
        ApiError::NotFound { code, message } => ApiError::bad(code, format!("{place}: {message}")),
        other => other,
    }
}

fn items<'a>(body: &'a Value, key: &str) -> Result<&'a [Value], ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(ApiError::bad(9207, format!("{key}: must be an array"))),
    }
}

fn item_id(item: &Value, place: &str) -> Result<String, ApiError> {
    item.get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::bad(9207, format!("{place}: id is required")))
}

/// `POST /dns_records/batch`: deletes, then patches, then puts, then posts, all or nothing.
pub async fn batch(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    authorized_zone(&state, &auth, &zone_id, Access::EditDns).await?;
    let body = parse_body(&body)?;
    if !body.is_object() {
        return Err(ApiError::bad(9207, "body: must be a JSON object"));
    }
    let (deletes, patches, puts, posts) = (
        items(&body, "deletes")?,
        items(&body, "patches")?,
        items(&body, "puts")?,
        items(&body, "posts")?,
    );
    let (result, zone) = mutate_zone(&state, &zone_id, |w| {
        let mut out: [Vec<DnsRecord>; 4] = Default::default();
        for (i, item) in deletes.iter().enumerate() {
            let place = format!("deletes[{i}]");
            let id = item_id(item, &place)?;
            out[0].push(w.delete(&id).map_err(at(place))?);
        }
        for (i, item) in patches.iter().enumerate() {
            let place = format!("patches[{i}]");
            let id = item_id(item, &place)?;
            let current = w
                .get(&id)
                .ok_or_else(ApiError::record_not_found)
                .map_err(at(place.clone()))?;
            let d = draft(&w.zone, &merged(current, item)?).map_err(at(place.clone()))?;
            out[1].push(w.replace(&id, d).map_err(at(place))?);
        }
        for (i, item) in puts.iter().enumerate() {
            let place = format!("puts[{i}]");
            let id = item_id(item, &place)?;
            let d = draft(&w.zone, item).map_err(at(place.clone()))?;
            out[2].push(w.replace(&id, d).map_err(at(place))?);
        }
        for (i, item) in posts.iter().enumerate() {
            let place = format!("posts[{i}]");
            let d = draft(&w.zone, item).map_err(at(place.clone()))?;
            out[3].push(w.create(d).map_err(at(place))?);
        }
        Ok(out)
    })
    .await?;
    let [d, pa, pu, po] = result.map(|rs| {
        rs.iter()
            .map(|r| r.to_api_json(&zone.name))
            .collect::<Vec<_>>()
    });
    Ok(ok(
        json!({"deletes": d, "patches": pa, "puts": pu, "posts": po}),
    ))
}

pub async fn export(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    let records = load_records(&state, &zone.id).await?;
    let text = export_zone_file(&zone, &records, &now_timestamp());
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// `POST /dns_records/import`: a BIND zone file as multipart `file` (a file part or a plain
/// field) and an optional `proxied` field. Every bad line is reported; nothing is imported
/// unless the whole file is good. Records identical to existing ones are skipped.
pub async fn import(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditDns).await?;
    let malformed = |e: String| ApiError::bad(9207, format!("multipart body is malformed: {e}"));
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = crate::multipart::boundary(content_type).map_err(malformed)?;
    let mut file: Option<String> = None;
    let mut proxied = false;
    for part in crate::multipart::parts(&body, &boundary).map_err(malformed)? {
        match part.name.as_str() {
            "file" => {
                let text = String::from_utf8(part.data.to_vec())
                    .map_err(|_| ApiError::bad(1037, "file: the zone file is not UTF-8 text"))?;
                file = Some(text);
            }
            "proxied" => {
                proxied = match std::str::from_utf8(part.data).map(str::trim) {
                    Ok("true") => true,
                    Ok("false") | Ok("") => false,
                    _ => return Err(ApiError::bad(1004, "proxied: must be true or false")),
                }
            }
            _ => {}
        }
    }
    let Some(text) = file else {
        return Err(ApiError::bad(
            1037,
            "file: a zone file is required (multipart field 'file')",
        ));
    };
    let parse =
        |text: &str| parse_zone_file(text, &zone.name, proxied).map_err(|e| zone_file_errors(&e));
    // Reading a large file takes a while: off the runtime's threads.
    let text: Arc<str> = Arc::from(text);
    let parsed = {
        let (text, zone_name) = (Arc::clone(&text), zone.name.clone());
        tokio::task::spawn_blocking(move || {
            parse_zone_file(&text, &zone_name, proxied).map_err(|e| zone_file_errors(&e))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("reading the zone file: {e}")))??
    };
    let total = parsed.records.len();
    // The parsed records are handed over to the write one by one, so that a large file is not
    // held twice; a retried write (another change came first) parses the file again.
    let first = std::sync::Mutex::new(Some(parsed.records));
    let (added, _) = mutate_zone(&state, &zone_id, |w| {
        let taken = first
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let records = match taken {
            Some(records) => records,
            None => parse(&text)?.records,
        };
        w.import(records)
    })
    .await?;
    Ok(ok(
        json!({"recs_added": added, "total_records_parsed": total}),
    ))
}

fn zone_file_errors(e: &ModelError) -> ApiError {
    ApiError::BadRequest(
        e.errors()
            .iter()
            .map(|f| ApiErrorItem {
                code: 1037,
                message: f.to_string(),
            })
            .collect(),
    )
}
