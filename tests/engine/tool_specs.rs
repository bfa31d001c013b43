//! Tool specs: what parses, what is refused and why, and how specs print back.

use atheria::tools::{ScheduledTool, Tool};

use crate::tools::{random_state, tool};

fn parse_error(spec: &str) -> String {
    spec.parse::<Tool>().expect_err(spec).to_string()
}

#[test]
fn bad_specs_are_clear_errors() {
    let cases = [
        (
            "swirl",
            "unknown tool 'swirl': expected one of vortex, wave, collapse, click-out, phase-flip, bit-flip",
        ),
        ("vortex:q=1", "vortex: unknown key 'q'; valid keys: x, y, radius, m, strength"),
        ("wave:kx", "wave: expected key=value, got 'kx'"),
        ("vortex:radius=-2", "vortex: radius must be positive, got '-2'"),
        ("collapse:radius=0", "collapse: radius must be positive"),
        ("vortex:m=1.5", "vortex: m must be an integer"),
        ("vortex:strength=2", "vortex: strength must be in [0, 1], got '2'"),
        ("wave:kx=nan", "wave: kx must be a finite number, got 'nan'"),
        ("wave:amplitude=abc", "wave: amplitude must be a finite number"),
        ("collapse:intensity=-0.1", "collapse: intensity must be in [0, 1]"),
        ("collapse:seed=-1", "collapse: seed must be a non-negative integer"),
        ("click-out:enabled=maybe", "click-out: enabled must be true or false"),
        ("click-out:chance=1.5", "click-out: chance must be in [0, 1]"),
        ("phase-flip:rate=2", "phase-flip: rate must be in [0, 1]"),
        ("vortex:x=1,x=2", "vortex: key 'x' given twice"),
    ];
    for (spec, expected) in cases {
        let error = parse_error(spec);
        assert!(error.contains(expected), "{spec}: {error}");
    }
}

#[test]
fn centres_must_lie_on_the_grid() {
    let psi = random_state(1, 8, 12, 2, 0);
    for spec in ["vortex:x=12", "vortex:x=-1", "collapse:y=8", "collapse:y=-0.5,x=3"] {
        let parsed = tool(spec);
        let error = parsed.check(8, 12).expect_err(spec).to_string();
        assert!(error.contains("outside the 8x12 grid"), "{spec}: {error}");
        assert!(parsed.apply(psi.clone(), 0).is_err(), "{spec}");
    }
    // The last column and row are on the grid.
    tool("vortex:x=11,y=7").check(8, 12).unwrap();
    tool("wave:kx=100").check(8, 12).unwrap();
}

#[test]
fn specs_print_and_parse_back() {
    for spec in [
        "vortex:x=3,y=4.5,radius=2,m=-2,strength=0.5",
        "wave",
        "collapse:seed=7",
        "click-out:enabled=false",
        "bit-flip",
    ] {
        let parsed = tool(spec);
        assert_eq!(tool(&parsed.to_string()), parsed, "{spec} -> {parsed}");
    }
}

#[test]
fn tools_pair_with_steps_in_order() {
    let tools = vec![tool("vortex"), tool("wave"), tool("click-out")];
    let scheduled = ScheduledTool::pair(tools.clone(), &[5, 2]).unwrap();
    let at: Vec<u64> = scheduled.iter().map(|s| s.at).collect();
    assert_eq!(at, [5, 2, 0]);
    assert_eq!(scheduled[1].tool, tools[1]);
    let error = ScheduledTool::pair(vec![tool("wave")], &[1, 2]).unwrap_err().to_string();
    assert!(error.contains("2 --tool-at for 1 --tool"), "{error}");
}
