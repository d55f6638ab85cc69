//! Unit tests of the engine through its public API: parsing, white-space stripping, the VM,
//! limits, filters and json mode. The conformance corpus (tests/it/conformance.rs) covers the
//! reference engine's exact output at large.

use bytes::BytesMut;

use super::*;

fn render_with(src: &str, json: &str, options: &Options) -> Result<String, String> {
    let t = Template::compile("t", src, options).map_err(|e| format!("compile: {e}"))?;
    let mut bytes = json.as_bytes().to_vec();
    let tape = simd_json::to_tape(&mut bytes).map_err(|e| e.to_string())?;
    let mut state = RenderState::default();
    let mut out = BytesMut::new();
    t.render(&mut state, tape.as_value(), &mut out)
        .map_err(|e| format!("render: {e}"))?;
    Ok(String::from_utf8(out.to_vec()).expect("utf-8 output"))
}

fn render(src: &str, json: &str) -> String {
    render_with(src, json, &Options::default()).unwrap_or_else(|e| panic!("{src:?}: {e}"))
}

fn render_err(src: &str, json: &str) -> String {
    match render_with(src, json, &Options::default()) {
        Ok(out) => panic!("{src:?} rendered {out:?}, expected an error"),
        Err(e) => e,
    }
}

#[test]
fn template_and_condition_are_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Template>();
    check::<Condition>();
    fn send<T: Send>() {}
    send::<RenderState>();
}

#[test]
fn interpolation_and_paths() {
    assert_eq!(render("Hi ${input.a.b}!", r#"{"a":{"b":"x"}}"#), "Hi x!");
    assert_eq!(render("${input.l[1]}", r#"{"l":[1,2]}"#), "2");
    assert_eq!(render(r#"${input["k k"]}"#, r#"{"k k":3}"#), "3");
    assert_eq!(render("${input.n!\"d\"}", "{}"), "d");
    assert_eq!(render("${(input.a.b)!\"d\"}", "{}"), "d");
    assert_eq!(
        render("${input.a??} ${input.z??}", r#"{"a":1}"#),
        "true false"
    );
}

#[test]
fn missing_values_fail_with_position() {
    let e = render_err("ab\n  ${input.nope}", "{}");
    assert!(e.contains("t:2:5"), "{e}");
    assert!(e.contains("null or missing"), "{e}");
    let e = render_err("${input.a.b!\"x\"}", "{}");
    assert!(e.contains("input.a"), "{e}");
}

#[test]
fn directives() {
    assert_eq!(
        render(
            "<#list input.l as x>${x}<#sep>,</#list>",
            r#"{"l":[1,2,3]}"#
        ),
        "1,2,3"
    );
    assert_eq!(
        render("<#list input.l as x>${x}<#else>none</#list>", r#"{"l":[]}"#),
        "none"
    );
    assert_eq!(
        render(
            "<#list input.h as k, v>${k}=${v};</#list>",
            r#"{"h":{"a":1,"b":"x"}}"#
        ),
        "a=1;b=x;"
    );
    assert_eq!(
        render(
            "<#macro m a b=2><#nested a + b></#macro><@m 1; s>[${s}]</@m>",
            "{}"
        ),
        "[3]"
    );
    assert_eq!(
        render(
            "<#function f n><#if n < 1><#return 0></#if><#return n + f(n - 1)></#function>${f(4)}",
            "{}"
        ),
        "10"
    );
    assert_eq!(
        render(
            "<#switch 2><#case 1>a<#case 2>b<#case 3>c<#break><#default>d</#switch>",
            "{}"
        ),
        "bc"
    );
    assert_eq!(
        render("<#assign x>cap ${1}</#assign>[${x}]", "{}"),
        "[cap 1]"
    );
}

#[test]
fn nested_content_loops_do_not_clobber_the_macros_loops() {
    let src = "<#macro each xs><#list xs as x><#nested x></#list></#macro>\
               <@each [1, 2]; a><#list [\"p\", \"q\"] as b>${a}${b} </#list></@each>";
    assert_eq!(render(src, "{}"), "1p 1q 2p 2q ");
}

#[test]
fn white_space_stripping() {
    assert_eq!(render("A\n<#if true>\nB\n</#if>\nC\n", "{}"), "A\nB\nC\n");
    assert_eq!(
        render("${1}\n  <#list 1..2 as i>\n  - ${i}\n  </#list>\nend", "{}"),
        "1\n  - 1\n  - 2\nend"
    );
    assert_eq!(
        render("<#assign a = 1>\n\n<#assign b = 2>\n${a + b}", "{}"),
        "3"
    );
    // #t trims its own line only (checked against ftl-oracle).
    assert_eq!(render("x  <#t>\n  y\n", "{}"), "x    y\n");
    assert_eq!(
        render(
            "<#ftl strip_whitespace=false>\n<#if true>\nB\n</#if>\n",
            "{}"
        ),
        "\nB\n\n"
    );
    assert_eq!(
        render("A\r\n<#if true>\r\nB\r\n</#if>\r\n", "{}"),
        "A\r\nB\r\n"
    );
}

#[test]
fn compile_errors_have_caret_snippets() {
    let e = Template::compile("tpl", "line1\n<#if x>oops", &Options::default()).unwrap_err();
    assert_eq!(e.name, "tpl");
    assert!(e.message.contains("unclosed #if"), "{}", e.message);
    let e = Template::compile("tpl", "ab ${1 + }", &Options::default()).unwrap_err();
    assert_eq!((e.line, e.column), (1, 10));
    assert!(e.to_string().ends_with("ab ${1 + }\n         ^"), "{e}");
    assert!(Template::compile("t", "<#foo>", &Options::default()).is_err());
    assert!(Template::compile("t", "${x?no_such_builtin}", &Options::default()).is_err());
}

#[test]
fn hostile_templates_fail_cleanly() {
    let tight = Options {
        fuel: 10_000,
        ..Options::default()
    };
    let e = render_with("<#list 1.. as i>${i}</#list>", "{}", &tight).unwrap_err();
    assert!(e.contains("fuel"), "{e}");
    let small = Options {
        max_output: 100,
        ..Options::default()
    };
    let e = render_with("<#list 1..1000 as i>xxxxxxxx</#list>", "{}", &small).unwrap_err();
    assert!(e.contains("limit"), "{e}");
    let e = render_with(
        "<#assign s = \"ab\"><#list 1..64 as i><#assign s = s + s></#list>${s?length}",
        "{}",
        &small,
    )
    .unwrap_err();
    assert!(e.contains("limit"), "{e}");
    let deep = format!("${{{}1{}}}", "(".repeat(5000), ")".repeat(5000));
    assert!(Template::compile("t", &deep, &Options::default()).is_err());
    let e = render_err("<#function f n><#return f(n)></#function>${f(1)}", "{}");
    assert!(e.contains("recursion"), "{e}");
}

#[test]
fn render_state_is_reusable_across_inputs() {
    let t = Template::compile(
        "t",
        "<#list input.l?filter(x -> x > 1) as x>${x}</#list>",
        &Options::default(),
    )
    .unwrap();
    let mut state = RenderState::default();
    for (json, want) in [(r#"{"l":[1,2,3]}"#, "23"), (r#"{"l":[5]}"#, "5")] {
        let mut bytes = json.as_bytes().to_vec();
        let tape = simd_json::to_tape(&mut bytes).unwrap();
        let mut out = BytesMut::new();
        t.render(&mut state, tape.as_value(), &mut out).unwrap();
        assert_eq!(&out[..], want.as_bytes());
    }
}

#[test]
fn conditions() {
    let c = Condition::compile(
        "filter",
        r#"input.event_type == "purchase" && input.user_properties.plan??"#,
        &Options::default(),
    )
    .unwrap();
    let mut state = RenderState::default();
    let mut eval = |json: &str| {
        let mut bytes = json.as_bytes().to_vec();
        let tape = simd_json::to_tape(&mut bytes).unwrap();
        c.eval(&mut state, tape.as_value())
    };
    assert!(eval(r#"{"event_type":"purchase","user_properties":{"plan":"pro"}}"#).unwrap());
    assert!(!eval(r#"{"event_type":"purchase","user_properties":{}}"#).unwrap());
    assert!(!eval(r#"{"event_type":"view"}"#).unwrap());
    let c2 = Condition::compile("f", "input.n", &Options::default()).unwrap();
    let mut bytes = br#"{"n":1}"#.to_vec();
    let tape = simd_json::to_tape(&mut bytes).unwrap();
    assert!(c2
        .eval(&mut RenderState::default(), tape.as_value())
        .is_err());
    assert!(Condition::compile("f", "input.a ==", &Options::default()).is_err());
}

#[test]
fn json_mode_validates_output() {
    let json = Options {
        json_mode: true,
        ..Options::default()
    };
    let e = render_with("{\"a\": ${input.x}", r#"{"x":1}"#, &json).unwrap_err();
    assert!(e.contains("not valid JSON"), "{e}");
    assert_eq!(
        render_with("{\"a\": ${input.x}}", r#"{"x":1}"#, &json).unwrap(),
        "{\"a\": 1}"
    );
}

#[test]
fn deep_paren_nesting_is_rejected_on_a_small_stack() {
    let deep = format!("${{{}1{}}}", "(".repeat(5000), ")".repeat(5000));
    let r = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || Template::compile("t", &deep, &Options::default()).is_err())
        .unwrap()
        .join()
        .unwrap();
    assert!(r);
}

#[test]
fn deep_recursion_fails_on_a_small_stack() {
    let r = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(|| render_err("<#function f n><#return f(n)></#function>${f(1)}", "{}"))
        .unwrap()
        .join()
        .unwrap();
    assert!(r.contains("recursion"), "{r}");
}

#[test]
fn value_stays_small() {
    // Values are copied on every instruction; keep them within one cache line.
    eprintln!(
        "Value={} Number={} Instr={}",
        std::mem::size_of::<vm::value::Value<'_>>(),
        std::mem::size_of::<format::Number>(),
        std::mem::size_of::<compiler::instr::Instr>()
    );
    assert!(std::mem::size_of::<vm::value::Value<'_>>() <= 64);
}

/// Mutates seed templates at random (bytes inserted, deleted, swapped; FTL fragments spliced in)
/// and checks that compiling and rendering never panics. `HOOKPIPE_MUTATIONS` raises the count.
#[test]
fn random_mutations_never_panic() {
    const SEEDS: &[&str] = &[
        "<#list input.users as u>${u.id}<#sep>,</#list>",
        "<#if input.a??>${input.a?upper_case}<#elseif input.b>x<#else>${input.c!\"d\"}</#if>",
        "<#macro m a b=2><#nested a, b></#macro><@m 1; x, y>${x + y}</@m>",
        "<#function f n><#return n * 2></#function>${f(3)} ${[1,2,3]?map(x -> x * 2)?join(\",\")}",
        "<#switch input.n><#case 1>one<#break><#default>d</#switch>${(1..3)?size}",
        "{\n  <#list input.h as k, v>\n  \"${k}\": ${v?c}<#sep>,\n  </#list>\n}\n",
        "<#assign x = {\"a\": [1, 2.5, \"s\"]}>${x.a[1]} ${x?keys?join(\"\")} ${\"a${1}b\"}",
        "[#ftl][#list 1..3 as i]${i}[/#list] <#compress>  a  b </#compress><#t>",
        "${input.t?datetime(\"yyyy-MM-dd\")?string(\"dd.MM\")} ${1/3} ${-1.5?round}",
    ];
    const FRAGMENTS: &[&str] = &[
        "<#if ",
        "</#if>",
        "<#list ",
        " as ",
        "</#list>",
        "${",
        "}",
        "?",
        "!",
        "??",
        "(",
        ")",
        "[",
        "]",
        "<#macro ",
        "<@",
        "/>",
        "<#--",
        "-->",
        "..",
        "->",
        "\"",
        "'",
        "\\",
        "<#sep>",
        "<#else>",
        "<#nested>",
        "<#return>",
        "${x",
        "1",
        "input",
        ".",
        ",",
        "\n",
        "\r",
        "<#t>",
        "?string(",
        "?then(",
        "<#assign ",
        "=",
        "+",
        "<#break>",
        "<#items as i>",
        "[#if ",
    ];
    let n: usize = std::env::var("HOOKPIPE_MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    let seed = std::env::var("HOOKPIPE_MUTATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = fastrand::Rng::with_seed(seed);
    let inputs = [
        r#"{"users":[{"id":1},{"id":"b"}],"a":"x","b":true,"c":null,"n":1,"h":{"k":1},"t":"2020-01-02"}"#,
        "{}",
        r#"{"users":"str","a":[1],"b":{"x":1},"n":"1","h":[],"t":5}"#,
    ];
    let options = Options {
        fuel: 20_000,
        max_output: 4096,
        ..Options::default()
    };
    for _ in 0..n {
        let mut src: Vec<u8> = SEEDS[rng.usize(..SEEDS.len())].as_bytes().to_vec();
        for _ in 0..rng.usize(1..6) {
            let at = rng.usize(..=src.len());
            match rng.u8(..4) {
                0 => {
                    let f = FRAGMENTS[rng.usize(..FRAGMENTS.len())];
                    src.splice(at..at, f.bytes());
                }
                1 if at < src.len() => {
                    let end = (at + rng.usize(1..8)).min(src.len());
                    src.drain(at..end);
                }
                2 if at < src.len() => src[at] = rng.u8(32..127),
                _ => {
                    let other = SEEDS[rng.usize(..SEEDS.len())].as_bytes();
                    let from = rng.usize(..other.len());
                    let end = (from + rng.usize(1..20)).min(other.len());
                    src.splice(at..at, other[from..end].iter().copied());
                }
            }
        }
        let Ok(text) = String::from_utf8(src) else {
            continue;
        };
        let Ok(t) = Template::compile("fuzz", &text, &options) else {
            continue;
        };
        for json in inputs {
            let mut bytes = json.as_bytes().to_vec();
            let tape = simd_json::to_tape(&mut bytes).expect("valid input");
            let mut out = BytesMut::new();
            let _ = t.render(&mut RenderState::default(), tape.as_value(), &mut out);
        }
    }
}

/// Mismatches the differential test found against ftl-oracle, pinned with the reference output.
#[test]
fn regressions_found_by_differential_testing() {
    let cases: &[(&str, &str)] = &[
        ("[${input.nothing!?upper_case}]", "[]"),
        ("${\"$\\{x} \\= \\'\"}", "${x} = '"),
        ("${true?string[0..<2]}", "tr"),
        ("${12345678901234567890?upper_case}", "12345678901234567890"),
        (
            "<#list [1,2] as x><#assign v>captured<#break></#assign></#list>[${v!}]",
            "[]",
        ),
        (
            "<#switch 'x'><#case 'y'>Y<#default>D<#case 'z'>Z</#switch>",
            "D",
        ),
        (
            "<#function f><#if true>noise</#if><#return 7></#function>${f()}",
            "7",
        ),
        ("${'Hello'?last_index_of('l', 2)}", "2"),
        (
            "${[1,2,3][1..*5]?join(',')}|${'abc'[1..*9]}|${[1][1..]?size}",
            "2,3|bc|0",
        ),
        ("<#compress>a \r b\r\n\r\nc</#compress>", "a\rb\r\nc"),
        ("${(input.l[0])!'d'}", "d"),
        (" ", " "),
        (
            "${input.missing!?is_enumerable?c} ${input.missing!?size}",
            "true 0",
        ),
        ("<#function f></#function><#t>\n\n \t ", ""),
        (
            "${['b','A','c','a','B','10','9','<x>',' z','_u']?sort?join('|')}",
            "_u|<x>|10|9|a|A|b|B|c| z",
        ),
    ];
    for (src, want) in cases {
        assert_eq!(&render(src, "{}"), want, "template {src:?}");
    }
    for src in [
        "<#switch 1><#default><#default></#switch>",
        "${\"a\".nope}",
        "<#list [1] ></#list>",
        "${-!true}",
        "<#if [1] == 1></#if>",
    ] {
        assert!(
            Template::compile("t", src, &Options::default()).is_err(),
            "{src:?} must not compile"
        );
    }
    for src in [
        "${\"2022-02-28\"?date(\"yyyy-MM-dd\")?time}",
        "${1?string('a', 'b')}",
        "${'s'?string('0.0')}",
    ] {
        render_err(src, "{}");
    }
}

#[test]
fn input_names_resolve_in_one_pass_with_the_first_duplicate_winning() {
    let json = r#"{"a":"1","b":"2","dup":"first","c":"3","d":"4","e":"5","dup":"second","f":"6","g":"7","h":"8","i":"9"}"#;
    assert_eq!(
        render("${input.dup}${input.a}${input.zz!'-'}", json),
        "first1-"
    );
    let many = "${input.a}${input.b}${input.c}${input.d}${input.e}${input.f}${input.g}\
                ${input.h}${input.i}${input.dup}${input.zz!'-'}";
    assert_eq!(render(many, json), "123456789first-");
    // A non-object input: the names are looked up as FreeMarker would (missing, or an error).
    assert_eq!(render("${input.a!'none'}", "[1]"), "none");
    assert!(render_err("${input.a}", "\"s\"").contains("input"));
}
