//! Golden bytes: the SHA-256 of every entry, and of the whole archive, for a few requests over
//! the test histories, recorded on the renderer before it was rewritten (typed items, parallel
//! serialisation, spilled day files). Any change to an archive's bytes fails here, naming the
//! entry; a deliberate format change updates these hashes together with `EXPORT_FORMAT_VERSION`
//! and `docs/export-format.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::fmt::Write as _;

use archive::{ExportLimits, ExportRequest, export_to_sink};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::history::{ACME_GLOBEX_DM, ACME_TEAM, ev, history};

/// A deterministic pseudo-random sequence (no dependency, the same on every machine).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

const TEXTS: [&str; 6] = [
    "hello",
    "quote \" backslash \\ newline \n tab \t",
    "héllo wörld — 😀 ✓",
    "",
    "a longer message that goes on for a while, repeated: a longer message that goes on",
    "<script>alert('x')</script> & ünïcödé",
];

fn people() -> Vec<Value> {
    vec![
        json!({"event_id": "p0", "type": "person.created", "occurred_at": "2026-01-01T00:00:00Z",
               "person": {"id": "ann", "company_id": "acme", "name": "Ann Ångström", "email": "ann@acme"}}),
        json!({"event_id": "p1", "type": "person.created", "occurred_at": "2026-01-01T00:00:00Z",
               "person": {"id": "hal", "company_id": "acme", "name": "Hal", "email": "hal@acme"}}),
        ev(
            "c1",
            "2026-01-01T00:00:00Z",
            "conversation.created",
            ACME_TEAM,
            json!({"name": "Desk", "created_by": "ann",
                  "members": [{"person_id": "ann", "company_id": "acme"}, {"person_id": "hal", "company_id": "acme"}]}),
        ),
        ev(
            "c2",
            "2026-01-01T00:00:00Z",
            "conversation.created",
            ACME_GLOBEX_DM,
            json!({"created_by": "gus", "members": [{"person_id": "ann", "company_id": "acme"}, {"person_id": "gus", "company_id": "globex", "name": "Gus"}]}),
        ),
    ]
}

/// Posts, notes and files in two conversations at random times over five days around the
/// range, in random order relative to their creations (changes before creations, second
/// creations and deletions, items never created), by known and unknown people.
fn random_history(seed: u64, events: usize) -> Vec<Value> {
    let mut rng = Lcg(seed);
    let mut all = people();
    let start: chrono::DateTime<chrono::Utc> = "2026-01-31T20:00:00Z".parse().unwrap();
    for i in 0..events {
        let (conv, prefix) = if rng.below(3) == 0 {
            (ACME_GLOBEX_DM, "d")
        } else {
            (ACME_TEAM, "t")
        };
        let at = start + chrono::Duration::minutes(17 * rng.below(5 * 24 * 60 / 17) as i64);
        let at = at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let who = ["ann", "gus", "hal", "zed"][rng.below(4) as usize];
        let text = format!("{} #{i}", TEXTS[rng.below(TEXTS.len() as u64) as usize]);
        let post = format!("{prefix}-p{}", rng.below(30));
        let note = format!("{prefix}-n{}", rng.below(8));
        let (ty, fields) = match rng.below(10) {
            0..=2 => {
                let parent = (rng.below(3) == 0).then(|| format!("{prefix}-p{}", rng.below(30)));
                (
                    "post.created",
                    json!({"post_id": post, "author_id": who, "text": text, "parent_post_id": parent}),
                )
            }
            3 | 4 => (
                "post.edited",
                json!({"post_id": post, "editor_id": who, "text": text}),
            ),
            5 => ("post.deleted", json!({"post_id": post, "deleted_by": who})),
            6 => (
                "note.created",
                json!({"note_id": note, "author_id": who, "title": format!("title {i}"), "text": text}),
            ),
            7 => {
                let title = (rng.below(2) == 0).then(|| format!("retitled {i}"));
                (
                    "note.edited",
                    json!({"note_id": note, "editor_id": who, "title": title, "text": text}),
                )
            }
            8 => ("note.deleted", json!({"note_id": note, "deleted_by": who})),
            _ => {
                let post_id = (rng.below(2) == 0).then(|| post.clone());
                (
                    "file.shared",
                    json!({"file_id": format!("{prefix}-f{i}"), "author_id": who,
                           "name": format!("report {i}.pdf"), "size": rng.below(1 << 30),
                           "content_type": "application/pdf", "sha256": format!("{:064x}", i),
                           "post_id": post_id}),
                )
            }
        };
        // Event ids in random order, so ties at one time are broken unlike the events' order.
        all.push(ev(
            &format!("g{:05}", rng.below(100_000)),
            &at,
            ty,
            conv,
            fields,
        ));
    }
    all
}

/// One day with more items than a day file holds, so it is split into parts.
fn busy_day() -> Vec<Value> {
    let mut all = people();
    let start: chrono::DateTime<chrono::Utc> = "2026-02-01T00:00:00Z".parse().unwrap();
    for i in 0..10_050 {
        let at = (start + chrono::Duration::seconds(i * 8))
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let (ty, fields) = if i % 500 == 499 {
            (
                "post.edited",
                json!({"post_id": format!("b{}", i - 7), "editor_id": "hal", "text": format!("edited {i}")}),
            )
        } else {
            (
                "post.created",
                json!({"post_id": format!("b{i}"), "author_id": "ann", "text": TEXTS[i as usize % 6]}),
            )
        };
        all.push(ev(&format!("b{i:06}"), &at, ty, ACME_TEAM, fields));
    }
    all
}

fn out_of_order_history() -> Vec<Value> {
    let post = |id: &str, at: &str, ty: &str, post: &str, text: &str| {
        let fields = match ty {
            "post.created" => json!({"post_id": post, "author_id": "ann", "text": text}),
            "post.edited" => json!({"post_id": post, "editor_id": "ann", "text": text}),
            _ => json!({"post_id": post, "deleted_by": "ann"}),
        };
        support::ev(id, at, ty, fields)
    };
    let note = |id: &str, at: &str, ty: &str, note: &str, text: &str| {
        let fields = match ty {
            "note.created" => {
                json!({"note_id": note, "author_id": "ann", "title": "T", "text": text})
            }
            "note.edited" => {
                json!({"note_id": note, "editor_id": "ann", "title": "T", "text": text})
            }
            _ => json!({"note_id": note, "deleted_by": "ann"}),
        };
        support::ev(id, at, ty, fields)
    };
    vec![
        // Deleted before created, one day.
        post("e01", "2026-02-01T10:00:00Z", "post.deleted", "a", ""),
        post("e02", "2026-02-01T10:05:00Z", "post.created", "a", "a1"),
        // Edited before created, then after.
        post("e03", "2026-02-01T11:00:00Z", "post.edited", "b", "b2"),
        post("e04", "2026-02-01T11:05:00Z", "post.created", "b", "b1"),
        post("e05", "2026-02-01T11:10:00Z", "post.edited", "b", "b3"),
        // Changed on one day, created on the next.
        post("e06", "2026-02-01T23:50:00Z", "post.edited", "c", "c2"),
        post("e07", "2026-02-02T00:10:00Z", "post.created", "c", "c1"),
        post("e08", "2026-02-02T00:20:00Z", "post.deleted", "c", ""),
        // Before the range's start: created there, changed inside.
        post("e09", "2026-01-31T23:00:00Z", "post.created", "d", "d1"),
        post("e10", "2026-02-01T01:00:00Z", "post.edited", "d", "d2"),
        // Never created in the range.
        post("e11", "2026-02-02T23:00:00Z", "post.deleted", "e", ""),
        post("e12", "2026-02-03T00:00:00Z", "post.created", "e", "late"),
        // A second creation and a second deletion.
        post("e13", "2026-02-01T12:00:00Z", "post.created", "f", "f1"),
        post("e14", "2026-02-01T12:01:00Z", "post.created", "f", "f2"),
        post("e15", "2026-02-01T12:02:00Z", "post.deleted", "f", ""),
        post("e16", "2026-02-01T12:03:00Z", "post.deleted", "f", ""),
        // Notes edited before created, on one day and across days.
        note("e17", "2026-02-01T10:00:00Z", "note.edited", "n", "v2"),
        note("e18", "2026-02-01T10:05:00Z", "note.created", "n", "v1"),
        note("e19", "2026-02-01T23:59:00Z", "note.edited", "m", "w2"),
        note("e20", "2026-02-02T00:01:00Z", "note.created", "m", "w1"),
        note("e21", "2026-02-02T00:02:00Z", "note.deleted", "m", ""),
        note("e22", "2026-02-02T05:00:00Z", "note.deleted", "o", ""),
        note("e23", "2026-02-02T05:01:00Z", "note.created", "o", "o1"),
        note("e24", "2026-02-02T05:02:00Z", "note.edited", "o", "o2"),
    ]
}

fn request(tz: &str) -> ExportRequest {
    support::request(tz)
}

fn with_people(mut request: ExportRequest, people: &[&str]) -> ExportRequest {
    request.person_ids = people.iter().map(|p| (*p).to_owned()).collect();
    request
}

fn with_conversations(mut request: ExportRequest, ids: &[&str]) -> ExportRequest {
    request.conversation_ids = ids.iter().map(|p| (*p).to_owned()).collect::<BTreeSet<_>>();
    request
}

/// The cases: a name, the log's events, and the requests over it.
fn cases() -> Vec<(&'static str, Vec<Value>, Vec<ExportRequest>)> {
    let mut all_history = request("");
    all_history.from = None;
    let mut wide = request("Asia/Tokyo");
    wide.from = Some("2026-01-30T00:00:00Z".parse().unwrap());
    wide.to = "2026-02-06T00:00:00Z".parse().unwrap();
    let mut out_of_order = out_of_order_history();
    out_of_order.insert(
        0,
        support::ev(
            "c1",
            "2026-01-01T00:00:00Z",
            "conversation.created",
            json!({"created_by": "ann", "members": [{"person_id": "ann", "company_id": "acme"}]}),
        ),
    );
    vec![
        (
            "render",
            history(),
            vec![
                request(""),
                request("America/New_York"),
                with_people(request("Europe/London"), &["gus"]),
                with_conversations(all_history.clone(), &["dm1", "team1"]),
            ],
        ),
        (
            "out_of_order",
            out_of_order,
            vec![request(""), request("Asia/Tokyo")],
        ),
        (
            "random",
            random_history(7, 600),
            vec![
                request(""),
                wide.clone(),
                with_people(request("America/New_York"), &["hal"]),
            ],
        ),
        ("busy_day", busy_day(), vec![request("")]),
    ]
}

/// `sha256 name` per entry, in archive order, then `sha256 archive` for the whole.
fn digest(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (name, body) in archive::verify::read_entries(bytes).unwrap() {
        writeln!(out, "{} {name}", hex::encode(Sha256::digest(&body))).unwrap();
    }
    writeln!(out, "{} archive", hex::encode(Sha256::digest(bytes))).unwrap();
    out
}

/// Every case's digest, for the requests as given and with `limits`.
pub async fn digests(limits: ExportLimits) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, events, requests) in cases() {
        let reader = support::log_of_exactly(&events).await;
        for (i, mut request) in requests.into_iter().enumerate() {
            request.limits = limits;
            let (bytes, _, _) = export_to_sink(&request, &reader, Vec::new(), |_| {})
                .await
                .unwrap();
            let report = archive::verify::verify(&mut std::io::Cursor::new(&bytes)).unwrap();
            assert!(
                report.problems.is_empty(),
                "{name}/{i}: {:?}",
                report.problems
            );
            out.push((format!("{name}/{i}"), digest(&bytes)));
        }
    }
    out
}

#[tokio::test]
async fn archives_keep_their_golden_bytes() {
    let actual = digests(ExportLimits::default()).await;
    let mut all = String::new();
    for (case, digest) in &actual {
        writeln!(all, "== {case}\n{digest}").unwrap();
    }
    assert_eq!(all, GOLDEN, "archive bytes changed; actual:\n{all}");
}

/// Recorded on the renderer of main at 0c600df (before typed items), `sha256 name` per entry;
/// the `random` cases' `dm1` files (and so their manifests and archives) re-recorded when the
/// log reader began streaming: that history reuses event ids `g28597` and `g48361` at different
/// times, which the old reader collapsed into one event (dropping the other) and the streaming
/// reader keeps as the two events they are (`docs/log-format.md`, "Reading"). Every
/// `users.json`, `teams.json` (and so manifest and archive) re-recorded for format version 5,
/// which added `membership` and `names` to their conversations; no day file changed.
const GOLDEN: &str = r"== render/0
79ab9a9569e5db6332786808f881472b391a5b5b82329878361bed96ba479c2b compliance_export_acme_2026-02-01_2026-02-03/People_Chats/dm1/2026-02-01.json
febe6f1c9f4a33ab96da5ebe90e8dfb707026b745e472d70f37507cadfd30cb0 compliance_export_acme_2026-02-01_2026-02-03/Team_Chats/Trading_Desk__team1/2026-02-01.json
addbe05ed295e207bb5ae11528190e909d7898f340ebac43bcb8da3e06b1f633 compliance_export_acme_2026-02-01_2026-02-03/People_Chats/dm1/2026-02-02.json
454fcf8d6cbad4befc6b936404247d69b1992294c672b2608808a6528c3495fe compliance_export_acme_2026-02-01_2026-02-03/Team_Chats/Trading_Desk__team1/2026-02-02.json
e89e30305cc95e85f9d8191070db312ad3dde6e955d060e491f2f2d9733db04e compliance_export_acme_2026-02-01_2026-02-03/People_And_Groups/users.json
bfd59afef6078106fde8867a9642d93ccc3da0f6c023e5273bed6bd466779c6a compliance_export_acme_2026-02-01_2026-02-03/Teams/teams.json
6ddaa9a33ff52cbafb2ba6884202e7a1ab9ca43138858fbb3b6d5378c79dafb8 compliance_export_acme_2026-02-01_2026-02-03/manifest.json
1dc56de1276c681b9d418da11e516079823b95e8bdd016f12701bc247c33393a archive

== render/1
afeaa7f84e2143093cb3a60d15dfa5ab2e0d83bfa2ac1cc02a511792b100ef2d compliance_export_acme_2026-02-01_2026-02-03/People_Chats/dm1/2026-02-01.json
e110f2d39f99b96c6f696aa12d3145436e680ed7a480d9ec026d0a6d8abdbbba compliance_export_acme_2026-02-01_2026-02-03/Team_Chats/Trading_Desk__team1/2026-02-01.json
03de73d7eac27f15fc60a51720bc1cb413bfddb30b092b22a2b100dd593287fa compliance_export_acme_2026-02-01_2026-02-03/Team_Chats/Trading_Desk__team1/2026-02-02.json
e89e30305cc95e85f9d8191070db312ad3dde6e955d060e491f2f2d9733db04e compliance_export_acme_2026-02-01_2026-02-03/People_And_Groups/users.json
bfd59afef6078106fde8867a9642d93ccc3da0f6c023e5273bed6bd466779c6a compliance_export_acme_2026-02-01_2026-02-03/Teams/teams.json
b7bc1d167f3644070b273b92ff378408e148b6fe0f61181f0fabefb2c5a3b682 compliance_export_acme_2026-02-01_2026-02-03/manifest.json
b3a445028f894515b417abfe955a6705ff9a5bb0ad1fc8d49e4d7550ac95b711 archive

== render/2
5af054b719a5a12bb7d3d9a58fd430cf1f7b336a59745bc546cda875c433fa0e compliance_export_acme_2026-02-01_2026-02-03/People_Chats/dm1/2026-02-01.json
fc8f54d674b20133e4c4036555e9cf302341d0709084f60d7c70cf0fe38880f2 compliance_export_acme_2026-02-01_2026-02-03/Team_Chats/Trading_Desk__team1/2026-02-01.json
c2566072b4069a25ab02624b410bc12e8b9f2a96517c5a88c29522b3f9c4f6d1 compliance_export_acme_2026-02-01_2026-02-03/People_Chats/dm1/2026-02-02.json
5587871d548ac23c9c9965c6093ea1ff33247147b886ec4ac703f917f67262ca compliance_export_acme_2026-02-01_2026-02-03/Team_Chats/Trading_Desk__team1/2026-02-02.json
e89e30305cc95e85f9d8191070db312ad3dde6e955d060e491f2f2d9733db04e compliance_export_acme_2026-02-01_2026-02-03/People_And_Groups/users.json
bfd59afef6078106fde8867a9642d93ccc3da0f6c023e5273bed6bd466779c6a compliance_export_acme_2026-02-01_2026-02-03/Teams/teams.json
a36a57c485fe81108d06234557ae0541b30d37c83d59fe85e141186aed760fdb compliance_export_acme_2026-02-01_2026-02-03/manifest.json
541b496a2547b092ca45df619c895b2d2d94ed5fe13e721cfc75ea054ca36725 archive

== render/3
ff56b4f5ea899a86952b8befef7996605814dda55928f355f533f743ea5bee66 compliance_export_acme_all-history_2026-02-03/Team_Chats/Trading_Desk__team1/2026-01-31.json
79ab9a9569e5db6332786808f881472b391a5b5b82329878361bed96ba479c2b compliance_export_acme_all-history_2026-02-03/People_Chats/dm1/2026-02-01.json
febe6f1c9f4a33ab96da5ebe90e8dfb707026b745e472d70f37507cadfd30cb0 compliance_export_acme_all-history_2026-02-03/Team_Chats/Trading_Desk__team1/2026-02-01.json
addbe05ed295e207bb5ae11528190e909d7898f340ebac43bcb8da3e06b1f633 compliance_export_acme_all-history_2026-02-03/People_Chats/dm1/2026-02-02.json
2d1d8cec2514ba31fdc2faf56e70245ec1a1212881ccbc33af86bd0e6df38a04 compliance_export_acme_all-history_2026-02-03/Team_Chats/Trading_Desk__team1/2026-02-02.json
ba47940e2bef627b5e22cbf6957a2aac637af14220b94219f0cbeb46501d2b3b compliance_export_acme_all-history_2026-02-03/People_And_Groups/users.json
da41f5bea115797b459c37d5a3e2b2b51373229b83d16fb7d470d59be1e7ebab compliance_export_acme_all-history_2026-02-03/Teams/teams.json
e676ccfbf1b42e688a36615a65911211a1072bb3cce38a37a25f576904862bcb compliance_export_acme_all-history_2026-02-03/manifest.json
aa2ffa5a42bb141f9e451bd00e22efc98d84a5d00a4d9f907f7219b17ba1aad9 archive

== out_of_order/0
1e28569b123a8ff8cd4032b6164c2ce6b96da7f2fdf103c1f611f7f704d4172d compliance_export_acme_2026-02-01_2026-02-03/Team_Chats/team1/2026-02-01.json
5794d4dc91ab85ff24a425608fd2dc39322b30c20e5f547dde762d1aae429443 compliance_export_acme_2026-02-01_2026-02-03/Team_Chats/team1/2026-02-02.json
fd192be5ae256207f6bd7354564181f211cd970e22c44574bcdb3b0d53553721 compliance_export_acme_2026-02-01_2026-02-03/People_And_Groups/users.json
9fdf430fd8062ec7d5d50ab7810e87d912108fd56474e92c9e4b5ee869c9b59f compliance_export_acme_2026-02-01_2026-02-03/Teams/teams.json
f96cecbd75e6a7b02b05b5407bee1392eceab1a1730ab0f48e6565d03b204ca1 compliance_export_acme_2026-02-01_2026-02-03/manifest.json
7b65da2d9aaeef961c4e76dae6323d69d5ff5cde5ccaeddf66d6df405ea2ef6f archive

== out_of_order/1
d8bdfd25c6ffce4abbac68522220fc1905cecdb1ba0f86a6ede8d646f42891de compliance_export_acme_2026-02-01_2026-02-03/Team_Chats/team1/2026-02-01.json
a36ed04cca68969c5c784d96f51209fd9484a7e3504303673f9ddc0ed0b9a1db compliance_export_acme_2026-02-01_2026-02-03/Team_Chats/team1/2026-02-02.json
f9cdefdcbeafbe00ff687175612b722a4f7b88cd8aacbe9baf76afd2c1c1ea0d compliance_export_acme_2026-02-01_2026-02-03/Team_Chats/team1/2026-02-03.json
fd192be5ae256207f6bd7354564181f211cd970e22c44574bcdb3b0d53553721 compliance_export_acme_2026-02-01_2026-02-03/People_And_Groups/users.json
9fdf430fd8062ec7d5d50ab7810e87d912108fd56474e92c9e4b5ee869c9b59f compliance_export_acme_2026-02-01_2026-02-03/Teams/teams.json
7099397f6875a59059a9f852d654e5f271dcacb0553e7c0cc5b2488cc23784a8 compliance_export_acme_2026-02-01_2026-02-03/manifest.json
59a729a552d4e466e3e72091c65b6bedefe3ef8c2554a20d65eceb783d470f30 archive

== random/0
91a1aaf435b98bec025ecbd5747fa050500129c7a77d0ef8b9074f19be8e2895 compliance_export_acme_2026-02-01_2026-02-03/People_Chats/dm1/2026-02-01.json
ecc64164bf51b15510127abfb217b5ef6a89635f4dc0ef4c9873e9982099602f compliance_export_acme_2026-02-01_2026-02-03/Team_Chats/Desk__team1/2026-02-01.json
8c2ef62469baeb68417babd9542547bd69fd4ab12c1f6d2bf4ee85cc1ea435cf compliance_export_acme_2026-02-01_2026-02-03/People_Chats/dm1/2026-02-02.json
5c34555323edba9ee0681b19edf4fca7eebaf84ae2542b352d65063a1b822fb8 compliance_export_acme_2026-02-01_2026-02-03/Team_Chats/Desk__team1/2026-02-02.json
f0b82b9717dced72644ecca2b09a4e5760e8534ee30cec6c0c8ae6c46fdef47f compliance_export_acme_2026-02-01_2026-02-03/People_And_Groups/users.json
c474c77e0e5f33e87184cb470622e7da51320a04cf668edeedcb6e4325589a29 compliance_export_acme_2026-02-01_2026-02-03/Teams/teams.json
308624feffe6981fdbce23f13630af703537056bac24addcf9f3b573bfa26b6d compliance_export_acme_2026-02-01_2026-02-03/manifest.json
3cbdd80302da215f8149389a9e28ffe3a939c29c080c932a663382eccd296adb archive

== random/1
c0eb0ea007b489b8e6e00e03f19524f93665b45a91feb0466b2b7259cf241a38 compliance_export_acme_2026-01-30_2026-02-06/People_Chats/dm1/2026-02-01.json
198a0c31e82813d3af6a3f696321cc707f0c131af3a7670564ddda57c6c0fb59 compliance_export_acme_2026-01-30_2026-02-06/Team_Chats/Desk__team1/2026-02-01.json
8e1fc682c78da09cc8edb1e396a8d0ccd45a193c77d74d02bf876471151c21f3 compliance_export_acme_2026-01-30_2026-02-06/People_Chats/dm1/2026-02-02.json
6f65446e6055a9dd0b994ae429d7fc99736feb10c2fd004c52e8ea79d5eddf86 compliance_export_acme_2026-01-30_2026-02-06/Team_Chats/Desk__team1/2026-02-02.json
f1ec364a833857d4d59554d883d3bce47cdcf23e946c8cdaf6e293cd33cfa51f compliance_export_acme_2026-01-30_2026-02-06/People_Chats/dm1/2026-02-03.json
f2b3d3f02d7163e2d812e57e34d79addbafef5a25e6c689ac73473a019d03a05 compliance_export_acme_2026-01-30_2026-02-06/Team_Chats/Desk__team1/2026-02-03.json
02a36ceba0d1f718ce0fc53406b383ff4a8fc84ad7ba8b81da70a3adf4ac14e8 compliance_export_acme_2026-01-30_2026-02-06/People_Chats/dm1/2026-02-04.json
96d6b93ed8d98d7936a982933540354bc05c48e7c11e5719cb39587b60b1dc10 compliance_export_acme_2026-01-30_2026-02-06/Team_Chats/Desk__team1/2026-02-04.json
7eaab719f8f1258cb8045796f815ffe94936c784163132e35bdd5b478ea77f66 compliance_export_acme_2026-01-30_2026-02-06/People_Chats/dm1/2026-02-05.json
6b62382bd997f249411f2d75d7f638d15b052ab1792985926cfbe788634c0913 compliance_export_acme_2026-01-30_2026-02-06/Team_Chats/Desk__team1/2026-02-05.json
6e5453cfe18319ccdefca570090e56fcffeb151534c17db9763d4a8116c99132 compliance_export_acme_2026-01-30_2026-02-06/People_Chats/dm1/2026-02-06.json
0aad3565eddcec1e2271cbf7f1b3f848cca505302618926f04c579239b24f824 compliance_export_acme_2026-01-30_2026-02-06/Team_Chats/Desk__team1/2026-02-06.json
f0b82b9717dced72644ecca2b09a4e5760e8534ee30cec6c0c8ae6c46fdef47f compliance_export_acme_2026-01-30_2026-02-06/People_And_Groups/users.json
c474c77e0e5f33e87184cb470622e7da51320a04cf668edeedcb6e4325589a29 compliance_export_acme_2026-01-30_2026-02-06/Teams/teams.json
7cbc62e4c45e63e2635f22cc012051af9f96bf8446fba36b3a97f7cda852b1b5 compliance_export_acme_2026-01-30_2026-02-06/manifest.json
ac6b4c8252a402cc31ff86c5ec38b17fef38549020abfce1273be7df08c23ef2 archive

== random/2
214f7c1dc9652a6756037aeda5f746d8c90809346f66d669319de42cd8c0aeb5 compliance_export_acme_2026-02-01_2026-02-03/People_Chats/dm1/2026-01-31.json
4c95364c01a671b9499f1fd7cf07d4a8fb1e87acd40839653546315844491371 compliance_export_acme_2026-02-01_2026-02-03/Team_Chats/Desk__team1/2026-01-31.json
12c9ea754c705266325050825911fca3eb6cded1a7e74fd184665cd74f2ed936 compliance_export_acme_2026-02-01_2026-02-03/People_Chats/dm1/2026-02-01.json
3ad8789470544c3e0fdaef4f63d1d8a3ce4777058f4a8333f321c7aeabce68d3 compliance_export_acme_2026-02-01_2026-02-03/Team_Chats/Desk__team1/2026-02-01.json
8c0b6dc2357287367c79f981bd90cff9c618a828fc151015153e6d6a03b6bfa5 compliance_export_acme_2026-02-01_2026-02-03/People_Chats/dm1/2026-02-02.json
5677c29fabd0973101d5b6ac7a7c43800af7e324f5bc678b39fd54730318cb45 compliance_export_acme_2026-02-01_2026-02-03/Team_Chats/Desk__team1/2026-02-02.json
f0b82b9717dced72644ecca2b09a4e5760e8534ee30cec6c0c8ae6c46fdef47f compliance_export_acme_2026-02-01_2026-02-03/People_And_Groups/users.json
c474c77e0e5f33e87184cb470622e7da51320a04cf668edeedcb6e4325589a29 compliance_export_acme_2026-02-01_2026-02-03/Teams/teams.json
b13da6fbce8da4e0dbcc29b33e9fcfa8c32e343bb86f265d5a664b396ce4c34c compliance_export_acme_2026-02-01_2026-02-03/manifest.json
d4278da67526bac848ba21d27b43e74e6d7548e78da3ff3cea706d6dcace47e6 archive

== busy_day/0
d9e3787b50a35de7557b4a23b2ea115610740fe122ff80f78065e342771403c2 compliance_export_acme_2026-02-01_2026-02-03/Team_Chats/Desk__team1/2026-02-01.json
4735a4901a34d8eb0810c2fca25399ccc71998454fe397d9499109ec9e2983c8 compliance_export_acme_2026-02-01_2026-02-03/Team_Chats/Desk__team1/2026-02-01_part-2.json
336b3fda3f01b39dc26bbbd755a0f2af20748da3aba30307b9a1e4b99e5ec504 compliance_export_acme_2026-02-01_2026-02-03/People_And_Groups/users.json
c474c77e0e5f33e87184cb470622e7da51320a04cf668edeedcb6e4325589a29 compliance_export_acme_2026-02-01_2026-02-03/Teams/teams.json
3c192f94d7aabf97fc787a06cf3e5e09b8628b826baa2fdc0d91e34c7c5de1ec compliance_export_acme_2026-02-01_2026-02-03/manifest.json
217965b0f1e2e766e4618c55e5bd7a2680853ffc07d024215fb4980c7d9bf93d archive

";

/// The same request gives the same bytes whatever the export may use: threads, and a memory
/// budget small enough that day files move to disk and entries are made one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_are_the_same_whatever_the_limits() {
    let expected = digests(ExportLimits::default()).await;
    for threads in [1, 2, 4] {
        for memory_bytes in [ExportLimits::default().memory_bytes, 64 << 10] {
            let limits = ExportLimits {
                memory_bytes,
                threads,
                ..ExportLimits::default()
            };
            let actual = digests(limits).await;
            for ((case, want), (_, got)) in expected.iter().zip(&actual) {
                assert_eq!(got, want, "{case} with {limits:?}");
            }
            assert_eq!(actual.len(), expected.len());
        }
    }
}

/// A day that must move to disk, with less temporary disk than it needs: the export fails and
/// says what to change.
#[tokio::test]
async fn an_export_past_its_disk_budget_fails_saying_so() {
    let reader = support::log_of_exactly(&busy_day()).await;
    let mut request = request("");
    request.limits = ExportLimits {
        memory_bytes: 64 << 10,
        disk_bytes: 1 << 20,
        threads: 2,
    };
    let error = export_to_sink(&request, &reader, Vec::new(), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(error, archive::ArchiveError::DiskBudget { limit_mib: 1 }),
        "{error}"
    );
    assert!(
        error.to_string().contains("CCE_EXPORT_DISK_BUDGET_MIB"),
        "{error}"
    );
}
