//! Tests of the configuration: defaults, every key's range and message,
//! interface selection.

use super::*;

#[test]
fn empty_file_is_the_defaults() {
    assert_eq!(Config::parse("", "t").unwrap(), Config::default());
}

#[test]
fn the_shipped_example_parses_to_the_defaults() {
    let text = include_str!("../../deploy/flowd.toml");
    let c = Config::parse(text, "deploy/flowd.toml").unwrap();
    assert_eq!(
        c,
        Config::default(),
        "deploy/flowd.toml documents the defaults"
    );
}

#[test]
fn bad_values_name_key_value_and_what_is_accepted() {
    let e = Config::parse("drain_interval_ms = 50", "f.toml")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "f.toml: key `drain_interval_ms`: value 50 is not accepted; accepted: 100 to 60000"
    );
    let e = Config::parse("drain_at_fill_percent = 150", "f.toml")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "f.toml: key `drain_at_fill_percent`: value 150 is not accepted; accepted: 0 (off) to 100"
    );
    let e = Config::parse("drain_at_fill_percent = -1", "f.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("drain_at_fill_percent") && e.contains("-1"),
        "{e}"
    );
    let e = Config::parse("xdp_mode = \"fast\"", "f.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`xdp_mode`") && e.contains("\"fast\"") && e.contains("\"native\""),
        "{e}"
    );
    let e = Config::parse("[flow_table]\nmax_flows = 0", "f.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("flow_table.max_flows") && e.contains("1 to 100000000"),
        "{e}"
    );
    let e = Config::parse("listen = \"localhost\"", "f.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("`listen`") && e.contains("\"localhost\""), "{e}");
}

#[test]
fn ipfix_section_is_checked() {
    let c = Config::parse("[ipfix]\ncollector = \"[fd00::9]:4739\"", "f.toml").unwrap();
    assert_eq!(c.ipfix.collector, "[fd00::9]:4739");
    let err = |text: &str| Config::parse(text, "f.toml").unwrap_err().to_string();
    let e = err("[ipfix]\ncollector = \"collector.example:4739\"");
    assert!(
        e.contains("`ipfix.collector`") && e.contains("IP address and UDP port"),
        "{e}"
    );
    let e = err("[ipfix]\ncollector = \"198.18.0.9:4739\"\nmax_message_bytes = 100");
    assert_eq!(
        e,
        "f.toml: key `ipfix.max_message_bytes`: value 100 is not accepted; accepted: 256 to 65000"
    );
    let e = err("[ipfix]\ntemplate_refresh_s = 0");
    assert!(
        e.contains("`ipfix.template_refresh_s`") && e.contains("1 to 86400"),
        "{e}"
    );
    assert!(err("[ipfix]\nport = 4739").contains("port"));
}

#[test]
fn metrics_and_scan_sections() {
    let c = Config::parse(
        "[metrics]\ntop_flows = 5\nseries_budget = 500\n[[metrics.services]]\nname = \"game\"\nports = [27015]\n[[metrics.peer_groups]]\nname = \"office\"\ncidrs = [\"10.1.0.0/16\"]\n[scan]\nports = 20\n",
        "f.toml",
    )
    .unwrap();
    let a = c.aggregates("f.toml").unwrap();
    assert_eq!((a.top_flows, a.series_budget), (5, 500));
    assert_eq!(a.services.len(), 1);
    assert_eq!(a.peer_groups[0].name, "office");
    assert_eq!(c.scan_config().ports, 20);
    let e = Config::parse("[metrics]\nseries_budget = 5", "f.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("metrics.series_budget") && e.contains("100 to 10000000"),
        "{e}"
    );
    let e = Config::parse(
        "[[metrics.peer_groups]]\nname = \"x\"\ncidrs = [\"10.0.0.0/33\"]",
        "f.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("metrics.peer_groups") && e.contains("10.0.0.0/33"),
        "{e}"
    );
}

#[test]
fn zero_speed_and_port_zero_are_refused_with_the_range() {
    let err = |text: &str| Config::parse(text, "f.toml").unwrap_err().to_string();
    assert_eq!(
        err("[interface_speeds]\neth0 = 0"),
        "f.toml: key `interface_speeds`: value eth0 = 0 is not accepted; accepted: bits per second from 1 to 10000000000000 (10 Tbit/s); leave an interface out to use the speed the kernel reports"
    );
    assert!(Config::parse("[interface_speeds]\neth0 = 1000000000", "f").is_ok());
    let e = err("listen = \"127.0.0.1:0\"");
    assert!(
        e.contains("`listen`") && e.contains("port from 1 to 65535"),
        "{e}"
    );
    let e = err("[ipfix]\ncollector = \"198.18.0.9:0\"");
    assert!(
        e.contains("`ipfix.collector`") && e.contains("1 to 65535"),
        "{e}"
    );
}

#[test]
fn reading_is_bounded_and_names_the_cause_once() {
    let e = Config::load(Path::new("/dev/zero"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "/dev/zero: larger than 1048576 bytes (1 MiB); a flowd configuration is a few KiB: is this the right file?"
    );
    let e = Config::load(Path::new("/")).unwrap_err();
    assert_eq!(e.to_string(), "cannot read /: Is a directory (os error 21)");
    assert!(
        std::error::Error::source(&e).is_none(),
        "the cause is in the message only"
    );
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let e = Config::parse("drain_intervall_ms = 100", "f.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("drain_intervall_ms"), "{e}");
    assert!(
        e.contains("drain_interval_ms"),
        "lists what is accepted: {e}"
    );
}

#[test]
fn patterns_with_exclusions() {
    let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(selects(&p(&[]), "eth0"));
    assert!(selects(&p(&["eth*"]), "eth0"));
    assert!(!selects(&p(&["eth*"]), "wlan0"));
    assert!(!selects(&p(&["eth*", "!eth1"]), "eth1"));
    assert!(selects(&p(&["!docker*"]), "eth0"));
    assert!(!selects(&p(&["!docker*"]), "docker0"));
    assert!(selects(&p(&["veth?"]), "veth1"));
    assert!(!selects(&p(&["veth?"]), "veth12"));
}
