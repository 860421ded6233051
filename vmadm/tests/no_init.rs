//! vmadm without a node to talk to: what the operator is told, and the exit codes.
//! (A private dbus-daemon nobody serves on; no init.)

mod common;
use common::{vmadm, Bus};

#[test]
fn no_init_on_the_bus_says_so_and_exits_1() {
    let bus = Bus::permissive();
    for args in [
        &["list"][..],
        &["get", "web01"],
        &["start", "web01"],
        &["lookup", "alias=web01"],
    ] {
        let run = vmadm(&bus.address, args).expect(1);
        assert_eq!(
            run.stderr.trim(),
            "vmadm: init is not running: no org.skerry.Node1 on the system bus",
            "{args:?}"
        );
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    let run = vmadm(&bus.address, &["events"]).expect(1);
    assert!(run.stderr.contains("init is not running"), "{}", run.stderr);
}

#[test]
fn no_bus_at_all_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:path={}", dir.path().join("nobody").display());
    let run = vmadm(&address, &["list"]).expect(1);
    assert!(
        run.stderr
            .starts_with("vmadm: init is not running: cannot connect to the system bus")
            && run.stderr.contains("DBUS_SYSTEM_BUS_ADDRESS"),
        "{}",
        run.stderr
    );
}

#[test]
fn usage_errors_exit_2_before_touching_the_bus() {
    // An address nobody listens on: a usage error must be found first.
    let address = "unix:path=/nonexistent/vmadm-test";
    for (args, expect) in [
        (&["stop"][..], "required arguments were not provided"),
        (&["frobnicate"], "unrecognized subcommand"),
        (
            &["list", "-o", "rma"],
            "unknown field 'rma' (did you mean 'ram'?)",
        ),
        (
            &["list", "-s", "-stat"],
            "unknown field 'stat' (did you mean 'state'?)",
        ),
        (
            &["list", "state"],
            "bad filter 'state': expected FIELD=VALUE or FIELD=~REGEX",
        ),
        (&["list", "alias=~("], "bad filter 'alias=~('"),
        (&["lookup", "x=1"], "unknown field 'x'"),
        (
            &["update", "web01", "ram"],
            "bad property 'ram': expected KEY=VALUE",
        ),
        (
            &["reconcile", "-o", "who"],
            "unknown field 'who'; fields: name,action,reason",
        ),
        (&["list", "-p", "-j"], "cannot be used with"),
    ] {
        let run = vmadm(address, args).expect(2);
        assert!(run.stderr.contains(expect), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn help_completions_and_man_page_come_from_the_cli_definition() {
    let address = "unix:path=/nonexistent/vmadm-test";
    let help = vmadm(address, &["--help"]).ok().stdout;
    for cmd in [
        "list",
        "get",
        "lookup",
        "create",
        "update",
        "delete",
        "start",
        "stop",
        "reboot",
        "console",
        "info",
        "events",
        "reconcile",
        "validate",
        "stats",
        "timeline",
    ] {
        assert!(
            help.contains(&format!("\n  {cmd} ")),
            "{cmd} missing from\n{help}"
        );
    }
    let bash = vmadm(address, &["completions", "bash"]).ok().stdout;
    assert!(
        bash.contains("complete -F _vmadm") && bash.contains("reconcile"),
        "{bash}"
    );
    let zsh = vmadm(address, &["completions", "zsh"]).ok().stdout;
    assert!(zsh.starts_with("#compdef vmadm"), "{zsh}");
    let man = vmadm(address, &["man"]).ok().stdout;
    assert!(
        man.contains(".TH vmadm 1") && man.contains("console"),
        "{man}"
    );
    vmadm(address, &["completions", "tcsh"]).expect(2);
}
