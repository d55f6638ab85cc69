//! Validation tests: every problem is reported at once, with its path; secrets never leak.

use super::{load_str, Config, LogFormat, StrError};
use std::path::Path;
use std::time::Duration;

fn env(name: &str) -> Option<String> {
    match name {
        "TOKEN" => Some("tok-s3cr3t-value".into()),
        "BAD_TOKEN" => Some("line1\r\nInjected: yes".into()),
        "SASL_PASSWORD" => Some("sasl-s3cr3t".into()),
        "SIGNING" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        "NOT_WHSEC" => Some("plain-s3cr3t".into()),
        _ => None,
    }
}

fn ok(text: &str) -> Config {
    match load_str(text, Path::new("."), &env) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got: {e}"),
    }
}

fn problems(text: &str) -> Vec<String> {
    match load_str(text, Path::new("."), &env) {
        Ok(_) => panic!("expected problems, the config was accepted"),
        Err(StrError::Parse(m)) => vec![m],
        Err(StrError::Invalid(e)) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

const MINIMAL: &str = r#"
[kafka]
bootstrap_servers = "127.0.0.1:9092"
[topics]
events = ["ev"]
dead_letter = "dlq"
[[destinations]]
name = "a"
url = "http://127.0.0.1:8080/hook"
[destinations.events]
"#;

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = ok(MINIMAL);
    assert_eq!(c.kafka.group_id, "hookpipe");
    assert!(c.pipeline.workers >= 1);
    assert_eq!(c.pipeline.max_in_flight, 10_000);
    assert_eq!(c.pipeline.max_in_flight_per_destination, 1_000);
    assert_eq!(c.pipeline.drain_timeout, Duration::from_secs(30));
    assert_eq!(c.pipeline.commit_interval, Duration::from_secs(1));
    assert_eq!(c.pipeline.circuit_breaker_failures, 10);
    assert_eq!(c.pipeline.circuit_breaker_cooldown, Duration::from_secs(5));
    assert!(c.pipeline.overflow);
    assert_eq!(c.pipeline.overflow_after, Duration::from_millis(20));
    assert_eq!(c.telemetry.listen.to_string(), "0.0.0.0:9464");
    assert_eq!(c.telemetry.log_format, LogFormat::Text);
    let d = &c.destinations[0];
    assert_eq!(d.connect_timeout, Duration::from_secs(2));
    assert_eq!(d.request_timeout, Duration::from_secs(5));
    let ev = d.events.as_ref().expect("events on");
    assert!(ev.accepts_type("anything"));
    assert!(ev.template.is_none() && ev.filter.is_none());
    assert!(d.users.is_none());
}

#[test]
fn full_config_resolves_env_and_sorts_event_types() {
    let c = ok(r#"
[kafka]
bootstrap_servers = "b1:9092,b2:9092"
group_id = "g"
[kafka.settings]
"session.timeout.ms" = 10000
"security.protocol" = "SASL_SSL"
"sasl.password" = { env = "SASL_PASSWORD" }
"enable.ssl.certificate.verification" = true
[topics]
events = ["ev1", "ev2"]
identify = ["id"]
dead_letter = "dlq"
[pipeline]
workers = 3
max_in_flight = 100
max_in_flight_per_destination = 10
drain_timeout = "1m30s"
commit_interval = "250ms"
[telemetry]
listen = "127.0.0.1:0"
log_format = "json"
[[destinations]]
name = "braze"
url = "https://rest.example.com/users/track"
connect_timeout = "500ms"
headers = [
  { name = "Authorization", value_env = "TOKEN" },
  { name = "X-Team", value = "growth" },
]
[destinations.signing]
secrets_env = ["SIGNING"]
[destinations.events]
event_types = ["signup", "purchase", "signup"]
[destinations.users]
[[destinations]]
name = "off"
enabled = false
url = "http://127.0.0.1:1/"
[destinations.users]
"#);
    assert_eq!(c.pipeline.workers, 3);
    assert_eq!(c.pipeline.drain_timeout, Duration::from_secs(90));
    assert_eq!(c.pipeline.commit_interval, Duration::from_millis(250));
    assert_eq!(c.telemetry.log_format, LogFormat::Json);
    let settings: Vec<_> = c
        .kafka
        .settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    assert!(settings.contains(&("sasl.password", "sasl-s3cr3t")));
    assert!(settings.contains(&("session.timeout.ms", "10000")));
    assert!(settings.contains(&("enable.ssl.certificate.verification", "true")));
    assert_eq!(c.destinations.len(), 1);
    assert_eq!(c.disabled, vec!["off".to_string()]);
    let d = &c.destinations[0];
    assert_eq!(d.headers[0].0, "Authorization");
    assert_eq!(d.headers[0].1.expose(), "tok-s3cr3t-value");
    assert_eq!(d.signing_secrets.len(), 1);
    let ev = d.events.as_ref().unwrap();
    assert_eq!(ev.event_types, vec!["purchase", "signup"]);
    assert!(ev.accepts_type("purchase") && !ev.accepts_type("click"));
    assert!(d.users.is_some());
    // Secrets never show in Debug output of the whole config.
    let debug = format!("{c:?}");
    for secret in [
        "tok-s3cr3t-value",
        "sasl-s3cr3t",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ] {
        assert!(!debug.contains(secret), "{secret} leaked in Debug");
    }
}

#[test]
fn every_problem_is_reported_at_once_with_its_path() {
    let all = problems(
        r#"
[kafka]
bootstrap_servers = ""
[kafka.settings]
"enable.auto.commit" = "true"
"sasl.password" = { env = "MISSING_SASL" }
[topics]
events = ["ev", "ev", "bad topic"]
dead_letter = "ev"
[pipeline]
max_in_flight = 10
max_in_flight_per_destination = 20
drain_timeout = "soon"
overflow_after = "later"
[telemetry]
listen = "nowhere"
log_format = "xml"
[[destinations]]
name = "braze"
url = "ftp://example.com/"
request_timeout = "0s"
headers = [
  { name = "A", value = "1" }, { name = "B", value = "2" }, { name = "C", value = "3" },
  { name = "D", value = "4" }, { name = "E", value = "5" }, { name = "F", value = "6" },
]
[destinations.events]
event_types = [""]
[[destinations]]
name = "braze"
url = "not a url"
headers = [
  { name = "content-TYPE", value = "text/plain" },
  { name = "User-Agent", value = "me" },
  { name = "X-Bad", value_env = "BAD_TOKEN" },
  { name = "X-Gone", value_env = "UNSET_TOKEN" },
  { name = "Bad Name", value = "x" },
]
[destinations.signing]
secrets_env = ["NOT_WHSEC"]
[[destinations]]
name = "silent"
url = "http://127.0.0.1/"
headers = [{ name = "X-Both", value = "a", value_env = "TOKEN" }, { name = "X-None" }]
"#,
    );
    let expect = [
        "kafka.bootstrap_servers: empty",
        "kafka.settings.\"enable.auto.commit\": set by hookpipe itself",
        "kafka.settings.\"sasl.password\": environment variable MISSING_SASL is not set",
        "topics.events[1]: topic \"ev\" is listed twice",
        "topics.events[2]: invalid character ' ' in topic name \"bad topic\"",
        "topics.dead_letter: \"ev\" is also an input topic",
        "pipeline.max_in_flight_per_destination: 20 is more than pipeline.max_in_flight (10)",
        "pipeline.drain_timeout: invalid duration \"soon\"",
        "pipeline.overflow_after: invalid duration \"later\"",
        "telemetry.listen: \"nowhere\" is not an address",
        "telemetry.log_format: \"xml\", expected \"text\" or \"json\"",
        "destinations[0] \"braze\".url: scheme \"ftp\"",
        "destinations[0] \"braze\".request_timeout: must be greater than zero",
        "destinations[0] \"braze\".headers: 6 custom headers, at most 5",
        "destinations[0] \"braze\".events.event_types[0]: empty event type",
        "destinations[1] \"braze\".name: duplicate destination name \"braze\"",
        "destinations[1] \"braze\".url: \"not a url\" is not a valid URL",
        "destinations[1] \"braze\".headers[0].name: \"content-TYPE\" is a preset header",
        "destinations[1] \"braze\".headers[1].name: \"User-Agent\" is a preset header",
        "destinations[1] \"braze\".headers[2].value: CR or LF in header value",
        "destinations[1] \"braze\".headers[3].value_env: environment variable UNSET_TOKEN is not set",
        "destinations[1] \"braze\".headers[4].name: \"Bad Name\" is not a valid header name",
        "destinations[1] \"braze\".signing.secrets_env[0]: NOT_WHSEC: not a Standard Webhooks secret",
        "destinations[1] \"braze\": neither [destinations.events] nor [destinations.users] is enabled",
        "destinations[2] \"silent\".headers[0]: both value and value_env",
        "destinations[2] \"silent\".headers[1]: neither value nor value_env",
        "destinations[2] \"silent\": neither [destinations.events] nor [destinations.users]",
    ];
    for e in expect {
        assert!(
            all.iter().any(|p| p.starts_with(e)),
            "missing problem {e:?} in:\n{}",
            all.join("\n")
        );
    }
    assert_eq!(
        all.len(),
        expect.len(),
        "unexpected extra problems:\n{}",
        all.join("\n")
    );
    let joined = all.join("\n");
    for secret in ["tok-s3cr3t-value", "Injected", "plain-s3cr3t"] {
        assert!(!joined.contains(secret), "{secret} leaked into an error");
    }
}

#[test]
fn unknown_fields_and_wrong_types_are_parse_errors_with_position() {
    let with_typo = MINIMAL.replace("url =", "uri =");
    let m = problems(&with_typo).join("\n");
    assert!(m.contains("unknown field `uri`"), "{m}");
    assert!(m.contains("line"), "{m}");
    let m = problems(&MINIMAL.replace(
        "[destinations.events]",
        "[destinations.events]\nevent_types = 3",
    ))
    .join("\n");
    assert!(m.contains("event_types"), "{m}");
}

#[test]
fn template_file_that_cannot_be_read_is_named() {
    let text = format!("{MINIMAL}template = \"templates/missing.ftl\"\n");
    let all = problems(&text);
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(
        all[0].starts_with(
            "destinations[0] \"a\".events.template: cannot read ./templates/missing.ftl"
        ),
        "{all:?}"
    );
}

#[test]
fn no_destinations_or_all_disabled_is_an_error() {
    let head = MINIMAL.split("[[destinations]]").next().unwrap();
    assert!(problems(head)
        .iter()
        .any(|p| p.starts_with("destinations: no [[destinations]]")));
    let off = MINIMAL.replace("url =", "enabled = false\nurl =");
    assert!(problems(&off)
        .iter()
        .any(|p| p.starts_with("destinations: every destination is disabled")));
}

#[test]
fn template_and_filter_errors_are_all_reported_with_line_column_and_caret() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.ftl"),
        "{\n  <#if input.user_id??>\n  \"x\": 1\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("good.ftl"),
        "{\"name\": \"${input.event_type}\"}",
    )
    .unwrap();
    let text = format!(
        "{MINIMAL}filter = 'input.event_properties.plan == '\ntemplate_inline = \"\"\"{{\n  \"name\": \"${{input.event_type\",\n}}\"\"\"\n[destinations.users]\ntemplate = \"bad.ftl\"\n[[destinations]]\nname = \"ok\"\nurl = \"http://127.0.0.1/\"\n[destinations.events]\nfilter = 'input.event_properties.plan == \"pro\"'\ntemplate = \"good.ftl\"\n"
    );
    let all = match load_str(&text, dir.path(), &env) {
        Ok(_) => panic!("accepted"),
        Err(e) => match e {
            StrError::Invalid(e) => e.0,
            StrError::Parse(m) => panic!("{m}"),
        },
    };
    let shown: Vec<String> = all.iter().map(|e| e.to_string()).collect();
    assert_eq!(all.len(), 3, "{shown:#?}");
    assert_eq!(all[0].path, "destinations[0] \"a\".events.filter");
    assert!(all[0].message.contains(":1:32: "), "{}", all[0].message);
    assert!(
        all[0].message.contains("\n") && all[0].message.ends_with('^'),
        "{}",
        all[0].message
    );
    assert_eq!(all[1].path, "destinations[0] \"a\".events");
    assert!(
        all[1].message.contains("template_inline:2:30: "),
        "{}",
        all[1].message
    );
    assert_eq!(all[2].path, "destinations[0] \"a\".users");
    assert!(
        all[2].message.starts_with("bad.ftl:5:1: "),
        "{}",
        all[2].message
    );
    assert!(all[2].message.contains("#if"), "{}", all[2].message);
}

#[test]
fn templates_and_filters_compile_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    std::fs::write(dir.path().join("templates/e.ftl"), "${input.event_type}").unwrap();
    let text = format!(
        "{MINIMAL}filter = 'input.event_properties.plan == \"pro\"'\ntemplate = \"templates/e.ftl\"\n"
    );
    let c = load_str(&text, dir.path(), &env).unwrap_or_else(|e| panic!("{e}"));
    let ev = c.destinations[0].events.as_ref().unwrap();
    assert!(ev.filter.is_some() && ev.template.is_some());
}

#[test]
fn retry_defaults_to_amplitudes_schedule_and_can_be_compressed_or_disabled() {
    let c = ok(MINIMAL);
    let r = c.retry.expect("retry tiers on by default");
    assert_eq!(r.schedule.attempts(), 10);
    assert_eq!(r.schedule.span(), Duration::from_secs(4 * 3600));
    assert_eq!(r.group_id, "hookpipe-retry");
    assert_eq!(r.tier_prefix, "hookpipe-retry");
    assert!(r.create_topics);
    let c = ok(&MINIMAL.replace(
        "[[destinations]]",
        "[retry]\nwaits = [\"1s\", \"2s\", \"1s\"]\ngroup_id = \"tiers\"\n[[destinations]]",
    ));
    let r = c.retry.unwrap();
    assert_eq!(r.schedule.attempts(), 4);
    assert_eq!(r.schedule.tiers().len(), 2);
    assert_eq!(r.group_id, "tiers");
    let c = ok(&MINIMAL.replace(
        "[[destinations]]",
        "[retry]\nenabled = false\n[[destinations]]",
    ));
    assert!(c.retry.is_none());
}

#[test]
fn retry_problems_are_reported_with_the_rest() {
    let all = problems(&MINIMAL.replace(
        "[[destinations]]",
        "[retry]\nwaits = [\"soon\", \"0s\"]\ntier_partitions = 0\ngroup_id = \"hookpipe\"\n[[destinations]]",
    ));
    for e in [
        "retry.waits[0]: invalid duration \"soon\"",
        "retry.waits[1]: must be greater than zero",
        "retry.tier_partitions: must be at least 1",
        "retry.group_id: must differ from kafka.group_id",
    ] {
        assert!(
            all.iter().any(|p| p.starts_with(e)),
            "missing {e:?} in {all:#?}"
        );
    }
    let all = problems(
        &MINIMAL
            .replace("dead_letter = \"dlq\"", "dead_letter = \"t-1m\"")
            .replace(
                "[[destinations]]",
                "[retry]\nwaits = [\"1m\"]\ntier_prefix = \"t\"\n[[destinations]]",
            ),
    );
    assert_eq!(
        all,
        vec!["retry.tier_prefix: tier topic \"t-1m\" is also an input or dead-letter topic"]
    );
    // Cohort input topics count as inputs too.
    for field in ["cohort_changes", "cohort_memberships"] {
        let all = problems(&MINIMAL.replace(
            "dead_letter = \"dlq\"",
            &format!(
                "{field} = [\"t-overflow\"]\ndead_letter = \"dlq\"\n[retry]\ntier_prefix = \"t\""
            ),
        ));
        assert!(
            all.iter().any(|p| p
                == "retry.tier_prefix: tier topic \"t-overflow\" is also an input or dead-letter topic"),
            "{field}: {all:#?}"
        );
    }
}

#[test]
fn tier_limits_default_to_the_documented_values_and_can_be_set() {
    let r = ok(MINIMAL).retry.unwrap();
    assert_eq!(r.limits, hookpipe_limits(256, 32, 256, 4096, 1024));
    // One partition per destination, at least 6.
    assert_eq!(r.tier_partitions, 6);
    let many: String = (0..9)
        .map(|i| format!("[[destinations]]\nname = \"d{i}\"\nurl = \"http://127.0.0.1:8080/{i}\"\n[destinations.events]\n"))
        .collect();
    let disabled =
        "[[destinations]]\nname = \"off\"\nenabled = false\nurl = \"http://127.0.0.1:8080/off\"\n";
    let r = ok(&format!("{MINIMAL}{many}{disabled}")).retry.unwrap();
    assert_eq!(
        r.tier_partitions, 10,
        "9 + 1 enabled destinations; the disabled one not counted"
    );
    let r = ok(&MINIMAL.replace(
        "[[destinations]]",
        "[retry]\ntier_partitions = 3\ntier_max_in_flight = 8\ntier_max_in_flight_per_destination = 2\n\
         tier_max_queued_per_destination = 5\ntier_max_queued = 50\ntier_prefetch_kbytes = 64\n[[destinations]]",
    ))
    .retry
    .unwrap();
    assert_eq!(r.tier_partitions, 3);
    assert_eq!(r.limits, hookpipe_limits(8, 2, 5, 50, 64));
}

fn hookpipe_limits(
    in_flight: usize,
    in_flight_per_destination: usize,
    queued_per_destination: usize,
    queued: usize,
    prefetch_kbytes: usize,
) -> crate::retry::TierLimits {
    crate::retry::TierLimits {
        in_flight,
        in_flight_per_destination,
        queued_per_destination,
        queued,
        prefetch_kbytes,
    }
}

#[test]
fn tier_limit_problems_name_their_field() {
    let all = problems(&MINIMAL.replace(
        "[[destinations]]",
        "[retry]\ntier_max_in_flight = 0\ntier_max_queued = 0\ntier_prefetch_kbytes = 0\n[[destinations]]",
    ));
    for e in [
        "retry.tier_max_in_flight: must be at least 1",
        "retry.tier_max_queued: must be at least 1",
        "retry.tier_prefetch_kbytes: must be at least 1",
        "retry.tier_max_in_flight_per_destination: 32 is more than retry.tier_max_in_flight (0)",
        "retry.tier_max_queued_per_destination: 256 is more than retry.tier_max_queued (0)",
    ] {
        assert!(all.iter().any(|p| p == e), "missing {e:?} in {all:#?}");
    }
    let all = problems(&MINIMAL.replace(
        "[[destinations]]",
        "[retry]\ntier_max_in_flight_per_destination = 300\ntier_prefetch_kbytes = 2000000\ntier_max_queued = -1\n[[destinations]]",
    ));
    assert_eq!(all.len(), 1, "a negative number is a parse error: {all:#?}");
    let all = problems(&MINIMAL.replace(
        "[[destinations]]",
        "[retry]\ntier_max_in_flight_per_destination = 300\ntier_prefetch_kbytes = 2000000\n[[destinations]]",
    ));
    assert_eq!(
        all,
        vec![
            "retry.tier_max_in_flight_per_destination: 300 is more than retry.tier_max_in_flight (256)",
            "retry.tier_prefetch_kbytes: 2000000 is more than 1048576 (1 GiB per partition)",
        ]
    );
}

#[test]
fn headers_the_delivery_client_owns_are_refused_at_check_time() {
    // Regression: `check` accepted x-amplitude-signature and keep-alive, which the delivery
    // client then refused when `run` started.
    let text = MINIMAL.replace(
        "url = \"http://127.0.0.1:8080/hook\"",
        "url = \"http://127.0.0.1:8080/hook\"\nheaders = [{ name = \"X-Amplitude-Signature\", value = \"x\" }, { name = \"Keep-Alive\", value = \"y\" }]",
    );
    let all = problems(&text);
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        all.iter().all(|p| p.contains("is set by hookpipe")),
        "{all:?}"
    );
}

#[test]
fn batching_is_off_by_default_and_gets_documented_defaults() {
    let c = ok(MINIMAL);
    assert!(c.destinations[0].events.as_ref().unwrap().batch.is_none());
    let c = ok(&format!(
        "{MINIMAL}batch = {{}}\n[destinations.users]\nbatch = {{ max_events = 7, max_bytes = 2048, max_wait_ms = 250, template_inline = '[<#list inputs as u>${{u.user_id}}<#sep>,</#list>]' }}\n"
    ));
    let d = &c.destinations[0];
    let b = d
        .events
        .as_ref()
        .unwrap()
        .batch
        .as_ref()
        .expect("events batch");
    assert_eq!(
        (b.max_events, b.max_bytes, b.max_wait),
        (100, 1 << 20, Duration::from_millis(1_000))
    );
    assert!(b.template.is_none());
    let u = d
        .users
        .as_ref()
        .unwrap()
        .batch
        .as_ref()
        .expect("users batch");
    assert_eq!(
        (u.max_events, u.max_bytes, u.max_wait),
        (7, 2048, Duration::from_millis(250))
    );
    assert!(u.template.is_some());
}

#[test]
fn batch_problems_are_reported_with_the_rest() {
    let text = r#"
[kafka]
bootstrap_servers = "127.0.0.1:9092"
[topics]
events = ["ev"]
dead_letter = "dlq"
[pipeline]
max_in_flight = 50
max_in_flight_per_destination = 10
[[destinations]]
name = "a"
url = "http://127.0.0.1:8080/hook"
[destinations.events]
template_inline = '${input.event_type}'
batch = { max_events = 0, max_bytes = -1, max_wait_ms = 60001, template_inline = '${inputs?size}' }
[destinations.users]
batch = { max_events = 51, template_inline = '<#if>' }
[[destinations]]
name = "b"
url = "http://127.0.0.1:8080/hook"
[destinations.events]
batch = { max_events = 10001 }
"#;
    let p = problems(text);
    let expect = [
        r#"destinations[0] "a".events.batch.max_events: 0 is out of range: 1 to 10000"#,
        r#"destinations[0] "a".events.batch.max_bytes: -1 is out of range: 1 to 16777216 bytes"#,
        r#"destinations[0] "a".events.batch.max_wait_ms: 60001 is out of range: 1 to 60000 ms"#,
        r#"destinations[0] "a".events.batch: both a per-payload template and a batch template"#,
        r#"destinations[0] "a".users.batch: destinations[0] "a".users.batch.template_inline:1:"#,
        r#"destinations[1] "b".events.batch.max_events: 10001 is out of range: 1 to 10000"#,
        r#"destinations[0] "a".users.batch.max_events: 51 is more than pipeline.max_in_flight (50)"#,
        r#"destinations[1] "b".events.batch.max_events: 10001 is more than pipeline.max_in_flight (50)"#,
    ];
    for e in expect {
        assert!(
            p.iter().any(|m| m.starts_with(e)),
            "missing {e:?} in {p:#?}"
        );
    }
    assert_eq!(p.len(), expect.len(), "{p:#?}");
    let unknown = problems(&format!("{MINIMAL}batch = {{ max_event = 3 }}\n"));
    assert!(unknown[0].contains("max_event"), "{unknown:?}");
}

#[test]
fn a_batch_template_sees_inputs_not_input() {
    use crate::template::RenderState;
    let c = ok(&format!(
        "{MINIMAL}batch = {{ template_inline = '${{inputs?size}}:<#list inputs as e>${{e.n}}</#list>:${{(input.n)!\"none\"}}' }}\n"
    ));
    let b = c.destinations[0]
        .events
        .as_ref()
        .unwrap()
        .batch
        .as_ref()
        .unwrap();
    let mut doc = br#"[{"n":1},{"n":2}]"#.to_vec();
    let tape = simd_json::to_tape(&mut doc).unwrap();
    let mut out = bytes::BytesMut::new();
    b.template
        .as_ref()
        .unwrap()
        .render(&mut RenderState::default(), tape.as_value(), &mut out)
        .unwrap();
    assert_eq!(&out[..], b"2:12:none");
}
