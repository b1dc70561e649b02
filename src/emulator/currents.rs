//! The partner's return path: Currents-style Avro exports of engagement events for cohort
//! members — push Send/Open, email Send/Click, canvas Entry with a control group — written
//! deterministically from a seed under a prefix, in the Currents layout, including late
//! arrivals (queued days after the event) and duplicate deliveries (at-least-once).

use std::collections::BTreeMap;
use std::sync::Arc;

use apache_avro::types::Value;
use apache_avro::{Codec, DeflateSettings, Schema, Writer};
use chrono::{DateTime, Duration, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::hash::SplitMix64;

/// Field kinds of the schemas written here.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    OptStr,
    Int,
    Bool,
    OptBool,
}
use Kind::*;

const COMMON: &[(&str, Kind)] = &[
    ("id", Str),
    ("user_id", Str),
    ("external_user_id", OptStr),
    ("time", Int),
    ("timezone", OptStr),
    ("app_group_id", OptStr),
];

struct EventType {
    name: &'static str,
    record: &'static str,
    fields: &'static [(&'static str, Kind)],
}

const TYPES: &[EventType] = &[
    EventType {
        name: "users.messages.pushnotification.Send",
        record: "PushNotificationSendEvent",
        fields: &[
            ("app_id", Str),
            ("campaign_id", OptStr),
            ("campaign_name", OptStr),
            ("message_variation_id", OptStr),
            ("canvas_id", OptStr),
            ("canvas_name", OptStr),
            ("send_id", OptStr),
            ("dispatch_id", OptStr),
            ("platform", Str),
            ("device_id", OptStr),
        ],
    },
    EventType {
        name: "users.messages.pushnotification.Open",
        record: "PushNotificationOpenEvent",
        fields: &[
            ("app_id", Str),
            ("campaign_id", OptStr),
            ("campaign_name", OptStr),
            ("message_variation_id", OptStr),
            ("canvas_id", OptStr),
            ("canvas_name", OptStr),
            ("send_id", OptStr),
            ("dispatch_id", OptStr),
            ("platform", OptStr),
            ("device_id", OptStr),
            ("button_action_type", OptStr),
            ("button_string", OptStr),
        ],
    },
    EventType {
        name: "users.messages.email.Send",
        record: "EmailSendEvent",
        fields: &[
            ("campaign_id", OptStr),
            ("campaign_name", OptStr),
            ("message_variation_id", OptStr),
            ("send_id", OptStr),
            ("dispatch_id", OptStr),
            ("email_address", Str),
        ],
    },
    EventType {
        name: "users.messages.email.Click",
        record: "EmailClickEvent",
        fields: &[
            ("campaign_id", OptStr),
            ("campaign_name", OptStr),
            ("message_variation_id", OptStr),
            ("send_id", OptStr),
            ("dispatch_id", OptStr),
            ("email_address", Str),
            ("url", OptStr),
            ("link_alias", OptStr),
            ("user_agent", OptStr),
            ("is_suspected_bot_click", OptBool),
        ],
    },
    EventType {
        name: "users.canvas.Entry",
        record: "CanvasEntryEvent",
        fields: &[
            ("canvas_id", Str),
            ("canvas_name", OptStr),
            ("canvas_variation_id", Str),
            ("canvas_step_id", OptStr),
            ("in_control_group", Bool),
        ],
    },
];

fn schema_json(t: &EventType) -> String {
    let fields: Vec<String> = COMMON
        .iter()
        .chain(t.fields)
        .map(|(name, kind)| {
            let ty = match kind {
                Str => "\"string\"".to_string(),
                OptStr => "[\"null\",\"string\"],\"default\":null".to_string(),
                Int => "\"int\"".to_string(),
                Bool => "\"boolean\"".to_string(),
                OptBool => "[\"null\",\"boolean\"],\"default\":null".to_string(),
            };
            format!("{{\"name\":\"{name}\",\"type\":{ty}}}")
        })
        .collect();
    format!(
        "{{\"type\":\"record\",\"name\":\"{}\",\"namespace\":\"com.braze.currents\",\"fields\":[{}]}}",
        t.record,
        fields.join(",")
    )
}

/// A value for one field; absent optional fields are null.
enum V {
    S(String),
    I(i32),
    B(bool),
}

fn record(t: &EventType, values: &BTreeMap<&str, V>) -> Value {
    let fields = COMMON
        .iter()
        .chain(t.fields)
        .map(|(name, kind)| {
            let v = values.get(name);
            let value = match (kind, v) {
                (Str, Some(V::S(s))) => Value::String(s.clone()),
                (Str, _) => Value::String(String::new()),
                (Int, Some(V::I(i))) => Value::Int(*i),
                (Int, _) => Value::Int(0),
                (Bool, Some(V::B(b))) => Value::Boolean(*b),
                (Bool, _) => Value::Boolean(false),
                (OptStr, Some(V::S(s))) => Value::Union(1, Box::new(Value::String(s.clone()))),
                (OptBool, Some(V::B(b))) => Value::Union(1, Box::new(Value::Boolean(*b))),
                (OptStr | OptBool, _) => Value::Union(0, Box::new(Value::Null)),
            };
            (name.to_string(), value)
        })
        .collect();
    Value::Record(fields)
}

/// Which campaigns the emulator "sends" to each cohort, and how users react.
#[derive(Debug, Clone)]
pub struct EngagementSpec {
    pub seed: u64,
    /// When the campaigns go out (each member's send falls in the two hours after).
    pub at: DateTime<Utc>,
    pub push_campaigns: Vec<PushCampaign>,
    /// The effect the pushes have on product use (none by default).
    pub lift: Lift,
}

/// A push campaign.
#[derive(Debug, Clone)]
pub struct PushCampaign {
    /// The cohort (the partner's cohort id) it goes to; `None`: every cohort exported.
    pub cohort_id: Option<String>,
    pub campaign_id: String,
    pub campaign_name: String,
    /// The product feature it points to: the one its lift raises the use of.
    pub feature: Option<String>,
}

/// A planted effect: a member who got a push with a feature uses that feature within `within`
/// of the send with probability `after_send`, or, if they opened it, within `within` of the
/// open with probability `after_open`. The uses are returned ([`EngagementReport::planted`])
/// for the product side to log (`synth::write_feature_uses`): users react in the product, not
/// at the partner. Drawn from a stream of their own, so the engagement events are the same
/// whatever the lift.
#[derive(Debug, Clone, Copy)]
pub struct Lift {
    pub after_send: f64,
    pub after_open: f64,
    pub within: Duration,
}

impl Default for Lift {
    fn default() -> Self {
        Lift {
            after_send: 0.0,
            after_open: 0.0,
            within: Duration::hours(12),
        }
    }
}

impl Lift {
    /// The expected rise in the share of members who use the feature after the push, over
    /// members who got no push: what `queries/analysis/lift.sql` should recover (before the
    /// few who would have used it anyway, `× (1 − base rate)`).
    pub fn expected(&self) -> f64 {
        OPEN_RATE * self.after_open + (1.0 - OPEN_RATE) * self.after_send
    }
}

/// The share of pushes opened.
pub const OPEN_RATE: f64 = 0.3;

/// A feature use the push caused.
#[derive(Debug, Clone, PartialEq)]
pub struct PlantedUse {
    pub user_id: String,
    pub feature: String,
    pub time: DateTime<Utc>,
}

/// A planted use as the row the product logs (`synth::FeatureUse`): `(user_id, feature, time)`.
impl<'a> From<&'a PlantedUse> for (&'a str, &'a str, DateTime<Utc>) {
    fn from(u: &'a PlantedUse) -> Self {
        (&u.user_id, &u.feature, u.time)
    }
}

/// What was written.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EngagementReport {
    pub files: u64,
    pub events: u64,
    pub duplicates: u64,
    pub late: u64,
    /// Feature uses planted by the lift (see [`Lift`]).
    pub planted_uses: u64,
    #[serde(skip)]
    pub planted: Vec<PlantedUse>,
}

/// Writes engagement for each `(cohort_id, members)` under `prefix`.
pub async fn write_engagement(
    store: Arc<dyn ObjectStore>,
    prefix: &Path,
    cohorts: &[(String, Vec<String>)],
    spec: &EngagementSpec,
) -> Result<EngagementReport, String> {
    let mut draw = Draw::new(spec);
    // Files written so far per (event type, queued hour).
    let mut parts: BTreeMap<(usize, String), usize> = BTreeMap::new();
    let mut report = EngagementReport::default();
    for (i, (cohort, members)) in cohorts.iter().enumerate() {
        let campaigns: Vec<&PushCampaign> = spec
            .push_campaigns
            .iter()
            .filter(|c| c.cohort_id.as_ref().is_none_or(|id| id == cohort))
            .collect();
        for user in members {
            // Written as it goes: memory holds a bounded number of records, not the export.
            if draw.out.len() >= FLUSH_RECORDS {
                write_files(
                    store.as_ref(),
                    prefix,
                    &mut draw.out,
                    &mut parts,
                    &mut report,
                )
                .await?;
            }
            for campaign in &campaigns {
                draw.campaign(user, campaign);
            }
            if i == 0 {
                draw.digest_and_onboarding(user);
            }
        }
    }
    write_files(
        store.as_ref(),
        prefix,
        &mut draw.out,
        &mut parts,
        &mut report,
    )
    .await?;
    report.duplicates = report.events - draw.n;
    report.late = draw.late;
    report.planted_uses = draw.planted.len() as u64;
    report.planted = draw.planted;
    Ok(report)
}

/// The events drawn so far, from the spec's two streams: one for the engagement, one for the
/// planted uses (so the engagement is the same whatever the lift).
struct Draw<'a> {
    spec: &'a EngagementSpec,
    rng: SplitMix64,
    plant: SplitMix64,
    planted: Vec<PlantedUse>,
    /// (event type index, queued hour, record)
    out: Vec<(usize, DateTime<Utc>, Value)>,
    /// Events drawn, duplicate deliveries not counted.
    n: u64,
    /// Events queued days late.
    late: u64,
}

impl<'a> Draw<'a> {
    fn new(spec: &'a EngagementSpec) -> Self {
        Draw {
            spec,
            rng: SplitMix64(spec.seed),
            plant: SplitMix64(spec.seed ^ 0x6c69_6674_0000_0000),
            planted: Vec::new(),
            out: Vec::new(),
            n: 0,
            late: 0,
        }
    }

    /// One event of type `TYPES[ty]` at `time`: numbered, queued (a few days late) and
    /// sometimes delivered twice.
    fn push(&mut self, ty: usize, time: DateTime<Utc>, values: BTreeMap<&str, V>) {
        self.n += 1;
        let n = self.n;
        let mut values = values;
        values.insert("id", V::S(format!("emu-{:016x}-{n}", self.spec.seed)));
        values.insert("time", V::I(time.timestamp() as i32));
        values.insert("app_group_id", V::S("emulator-workspace".into()));
        let rec = record(&TYPES[ty], &values);
        // Most events are queued within the hour; some days late.
        let queued = if self.rng.next_f64() < 0.05 {
            self.late += 1;
            time + Duration::days(2)
        } else {
            time + Duration::minutes(5)
        };
        if self.rng.next_f64() < 0.02 {
            self.out
                .push((ty, queued + Duration::hours(1), rec.clone()));
        }
        self.out.push((ty, queued, rec));
    }

    /// A push campaign's send to `user`, maybe its open, and the feature use it may cause.
    fn campaign(&mut self, user: &str, campaign: &PushCampaign) {
        let (campaign_id, campaign_name) = (&campaign.campaign_id, &campaign.campaign_name);
        let lift = self.spec.lift;
        let sent = self.spec.at + Duration::seconds((self.rng.next_f64() * 7200.0) as i64);
        let mut m = base(user);
        m.insert("app_id", V::S("app-main".into()));
        m.insert("campaign_id", V::S(campaign_id.clone()));
        m.insert("campaign_name", V::S(campaign_name.clone()));
        m.insert("platform", V::S("ios".into()));
        m.insert("send_id", V::S(format!("{campaign_id}-send")));
        self.push(0, sent, m);
        let mut reacted_from = (sent, lift.after_send);
        if self.rng.next_f64() < OPEN_RATE {
            let mut m = base(user);
            m.insert("app_id", V::S("app-main".into()));
            m.insert("campaign_id", V::S(campaign_id.clone()));
            m.insert("campaign_name", V::S(campaign_name.clone()));
            m.insert("platform", V::S("ios".into()));
            let opened = sent + Duration::seconds(60 + (self.rng.next_f64() * 7200.0) as i64);
            self.push(1, opened, m);
            reacted_from = (opened, lift.after_open);
        }
        // Two draws per push whatever the lift, so one lift's world differs from
        // another's only in the uses planted.
        let (hit, delay) = (self.plant.next_f64(), self.plant.next_f64());
        if let Some(feature) = &campaign.feature
            && hit < reacted_from.1
        {
            let within = lift.within.num_seconds().max(1) as f64;
            self.planted.push(PlantedUse {
                user_id: user.to_owned(),
                feature: feature.clone(),
                time: reacted_from.0 + Duration::seconds((delay * within) as i64),
            });
        }
    }

    /// The first cohort's members also get the weekly digest email (some click it) and enter
    /// the onboarding canvas (some in its control group).
    fn digest_and_onboarding(&mut self, user: &str) {
        let t0 = self.spec.at;
        let mut m = base(user);
        m.insert("campaign_id", V::S("camp-digest".into()));
        m.insert("campaign_name", V::S("Weekly digest".into()));
        m.insert("email_address", V::S(format!("{user}@example.com")));
        self.push(2, t0, m);
        if self.rng.next_f64() < 0.12 {
            let mut m = base(user);
            m.insert("campaign_id", V::S("camp-digest".into()));
            m.insert("campaign_name", V::S("Weekly digest".into()));
            m.insert("email_address", V::S(format!("{user}@example.com")));
            m.insert("url", V::S("https://example.com/whats-new".into()));
            m.insert("is_suspected_bot_click", V::B(self.rng.next_f64() < 0.05));
            self.push(3, t0 + Duration::minutes(30), m);
        }
        let mut m = base(user);
        m.insert("canvas_id", V::S("canvas-onboarding".into()));
        m.insert("canvas_name", V::S("Onboarding".into()));
        m.insert("canvas_variation_id", V::S("v1".into()));
        m.insert("in_control_group", V::B(self.rng.next_f64() < 0.1));
        self.push(4, t0, m);
    }
}

/// The fields every event of `user` carries.
fn base(user: &str) -> BTreeMap<&'static str, V> {
    let mut m: BTreeMap<&str, V> = BTreeMap::new();
    m.insert("user_id", V::S(format!("braze-{user}")));
    m.insert("external_user_id", V::S(user.to_owned()));
    m
}

/// Records held before they are written out.
const FLUSH_RECORDS: usize = 500_000;

/// Writes the records gathered so far: one file per (type, queued hour), at most 15,000 records
/// each, like Currents; numbered on from the files already written for that hour.
async fn write_files(
    store: &dyn ObjectStore,
    prefix: &Path,
    out: &mut Vec<(usize, DateTime<Utc>, Value)>,
    parts: &mut BTreeMap<(usize, String), usize>,
    report: &mut EngagementReport,
) -> Result<(), String> {
    let mut groups: BTreeMap<(usize, String), Vec<Value>> = BTreeMap::new();
    for (ty, queued, rec) in out.drain(..) {
        groups
            .entry((ty, queued.format("%Y-%m-%d-%H").to_string()))
            .or_default()
            .push(rec);
    }
    let root = prefix
        .clone()
        .join("dataexport.emulator.S3.integration.cohort-bridge");
    for ((ty, hour), records) in groups {
        let t = &TYPES[ty];
        let schema =
            Schema::parse_str(&schema_json(t)).map_err(|e| format!("schema {}: {e}", t.name))?;
        let next = parts.entry((ty, hour.clone())).or_default();
        for chunk in records.chunks(15_000) {
            let mut w = Writer::with_codec(
                &schema,
                Vec::new(),
                Codec::Deflate(DeflateSettings::default()),
            )
            .map_err(|e| e.to_string())?;
            for rec in chunk {
                w.append_value_ref(rec)
                    .map_err(|e| format!("{}: {e}", t.name))?;
            }
            let bytes = w.into_inner().map_err(|e| e.to_string())?;
            let path = root
                .clone()
                .join(format!("event_type={}", t.name))
                .join(format!("date={hour}"))
                .join("1")
                .join("us-east-1")
                .join(format!("{}+{next}+0.avro", t.record));
            *next += 1;
            store
                .put(&path, bytes.into())
                .await
                .map_err(|e| format!("{path}: {e}"))?;
            report.files += 1;
            report.events += chunk.len() as u64;
        }
    }
    Ok(())
}
