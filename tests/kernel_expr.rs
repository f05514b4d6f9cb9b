//! The kernel expression language: cycles, repeats, parentheses and mixtures parse into
//! the expected trees, print canonically, and malformed expressions are refused with the
//! column and what was expected there.

use latflow::kernel::KernelExpr;

fn k(name: &str) -> KernelExpr {
    KernelExpr::Kernel(name.to_string())
}

fn parse_error(text: &str) -> String {
    match KernelExpr::parse(text) {
        Ok(expr) => panic!("`{text}` parsed as {expr:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn cycles_repeats_and_parentheses() {
    assert_eq!(KernelExpr::parse("hmc").unwrap(), k("hmc"));
    assert_eq!(
        KernelExpr::parse("flow+local*2+hmc").unwrap(),
        KernelExpr::Cycle(vec![
            k("flow"),
            KernelExpr::Repeat(Box::new(k("local")), 2),
            k("hmc"),
        ])
    );
    assert_eq!(
        KernelExpr::parse(" ( flow + local ) * 3 + hmc ").unwrap(),
        KernelExpr::Cycle(vec![
            KernelExpr::Repeat(Box::new(KernelExpr::Cycle(vec![k("flow"), k("local")])), 3),
            k("hmc"),
        ])
    );
    // Grouping a cycle inside a cycle changes nothing.
    assert_eq!(
        KernelExpr::parse("(a+b)+(c)").unwrap(),
        KernelExpr::parse("a+b+c").unwrap()
    );
    assert_eq!(
        KernelExpr::parse("local*2*3").unwrap(),
        KernelExpr::Repeat(Box::new(KernelExpr::Repeat(Box::new(k("local")), 2)), 3)
    );
}

#[test]
fn mixtures() {
    assert_eq!(
        KernelExpr::parse("mix(0.3: flow, 0.7: local*2+hmc)").unwrap(),
        KernelExpr::Mixture(vec![
            (0.3, k("flow")),
            (
                0.7,
                KernelExpr::Cycle(vec![KernelExpr::Repeat(Box::new(k("local")), 2), k("hmc")])
            ),
        ])
    );
    let nested = KernelExpr::parse("mix(1e0:a,2:mix(1:b,3.5E-1:c))*2+d").unwrap();
    assert_eq!(nested.names(), ["a", "b", "c", "d"]);
    assert!(nested.contains("c") && !nested.contains("e"));
}

#[test]
fn display_is_canonical_and_parses_back() {
    for text in [
        "hmc",
        "flow+local*2+hmc",
        "(flow+local)*4+hmc",
        "mix(0.3:flow, 0.7:(hmc+local)*2)+local_2",
        "a*2*3",
    ] {
        let expr = KernelExpr::parse(text).unwrap();
        assert_eq!(expr.to_string(), text);
        assert_eq!(KernelExpr::parse(&expr.to_string()).unwrap(), expr);
    }
    assert_eq!(
        KernelExpr::parse(" flow +\tlocal ").unwrap().to_string(),
        "flow+local"
    );
}

#[test]
fn errors_name_the_column_and_what_was_expected() {
    let cases = [
        (
            "",
            "column 1: expected a kernel name, `(` or `mix(`, found the end",
        ),
        ("flow+", "column 6: expected a kernel name"),
        (
            "flow++hmc",
            "column 6: expected a kernel name, `(` or `mix(`, found `+`",
        ),
        ("local*", "column 7: expected a repeat count"),
        ("local*0", "column 7: a repeat count must be at least 1"),
        (
            "local*x",
            "column 7: expected a repeat count (an integer ≥ 1), found `x`",
        ),
        (
            "local*99999999999999999999999",
            "column 7: the repeat count is too large",
        ),
        (
            "(flow+hmc",
            "column 10: expected `)`, `+` or `*`, found the end",
        ),
        (
            "flow)",
            "column 5: expected `+`, `*` or the end of the expression, found `)`",
        ),
        ("flow hmc", "column 6: expected `+`, `*` or the end"),
        ("2*flow", "column 1: expected a kernel name"),
        ("mix", "column 4: expected `(` after `mix`"),
        ("mix(flow, hmc)", "column 5: expected a mixture weight"),
        (
            "mix(0.5 flow)",
            "column 9: expected `:` after the weight, found `f`",
        ),
        (
            "mix(0.5:flow)",
            "a mixture needs at least two weighted parts",
        ),
        (
            "mix(0:flow, 1:hmc)",
            "column 5: a mixture weight must be positive",
        ),
        (
            "mix(1.2.3:flow, 1:hmc)",
            "column 5: `1.2.3` is not a number",
        ),
        (
            "mix(1:flow; 1:hmc)",
            "column 11: expected `,` or `)`, found `;`",
        ),
        ("flow+_x", "column 6: expected a kernel name"),
    ];
    for (text, needle) in cases {
        let message = parse_error(text);
        assert!(message.contains(needle), "`{text}`: {message}");
        assert!(message.contains("kernel expression"), "{message}");
    }
    let deep = format!("{}flow{}", "(".repeat(200), ")".repeat(200));
    assert!(parse_error(&deep).contains("nesting deeper than"));
}

#[test]
fn serde_uses_the_string_form() {
    let expr = KernelExpr::parse("flow + local*2").unwrap();
    let json = serde_json::to_string(&expr).unwrap();
    assert_eq!(json, "\"flow+local*2\"");
    assert_eq!(serde_json::from_str::<KernelExpr>(&json).unwrap(), expr);
    let bad = serde_json::from_str::<KernelExpr>("\"flow+\"").unwrap_err();
    assert!(bad.to_string().contains("column 6"), "{bad}");
}
