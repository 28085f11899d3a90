//! The command line against the option table every front end shares (`tests/options.tsv`):
//! `create-namespace` and `enable-namespace` accept and refuse exactly the values the table
//! says, and print the defaults it names when no value is given. The C ABI and Python run the
//! same table.

use serde_json::Value;

mod common;

use common::{TempRegion, devmap, object};

#[path = "../../../tests/options_table.rs"]
mod options_table;

use options_table::table;

/// The flags of `options` (pairs of option and value).
fn flags(options: &[(String, String)]) -> Vec<String> {
    options
        .iter()
        .flat_map(|(k, v)| [format!("--{k}"), v.clone()])
        .collect()
}

fn run(args: &[String]) -> (bool, String) {
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = devmap(&argv);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn destroy(region: &str, name: &str) {
    let out = devmap(&["destroy-namespace", "-r", region, name]);
    assert!(out.status.success(), "destroy {name}");
}

/// A printed option value as the table spells it (aligns are printed as byte counts).
fn printed(v: &Value, option: &str) -> String {
    match &v[option] {
        Value::String(s) => s.clone(),
        Value::Number(n) => devmap::units::format_size(n.as_u64().expect("a byte count")),
        other => panic!("{option}: {other}"),
    }
}

#[test]
fn the_command_line_accepts_refuses_and_defaults_as_the_table_says() {
    let r = TempRegion::new("options");
    object(&["create-region", "--path", r.path(), "--size", "8G"]);
    object(&["create-namespace", "-r", r.path(), "-s", "64M", "-n", "e"]);
    let mut checked = 0;
    for (i, row) in table().iter().enumerate() {
        let name = format!("n{i}");
        match (row.verb.as_str(), row.expect.as_str()) {
            ("create-namespace", "default") => {
                let obj = object(&["create-namespace", "-r", r.path(), "-s", "64M", "-n", &name]);
                assert_eq!(printed(&obj, &row.option), row.value, "{row:?}");
                destroy(r.path(), &name);
            }
            ("create-namespace", expect) => {
                let mut options = vec![("size".to_owned(), "64M".to_owned())];
                options.retain(|(k, _)| *k != row.option && !row.with.iter().any(|(w, _)| w == k));
                options.extend(row.with.iter().cloned());
                options.push((row.option.clone(), row.value.clone()));
                let mut args: Vec<String> =
                    vec!["create-namespace".into(), "-r".into(), r.path().into()];
                args.extend(flags(&options));
                args.extend(["-n".into(), name.clone()]);
                let (ok, out) = run(&args);
                assert_eq!(ok, expect == "ok", "{row:?}: {out}");
                if ok {
                    destroy(r.path(), &name);
                }
            }
            ("enable-namespace", "default") => {
                let obj = object(&["enable-namespace", "-r", r.path(), "e"]);
                assert_eq!(printed(&obj, &row.option), row.value, "{row:?}");
            }
            ("enable-namespace", expect) => {
                let mut args: Vec<String> = vec![
                    "enable-namespace".into(),
                    "-r".into(),
                    r.path().into(),
                    "e".into(),
                ];
                args.extend(flags(&[(row.option.clone(), row.value.clone())]));
                let (ok, out) = run(&args);
                assert_eq!(ok, expect == "ok", "{row:?}: {out}");
            }
            ("device", _) => continue,
            (verb, _) => panic!("unknown verb {verb} in tests/options.tsv"),
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} rows ran");
}
