//! The local scripts, `docker-compose.yml` and the services' own configuration use the same
//! environment variable names, so the two ways of running the system describe one system.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use clap::CommandFactory;
use tests::{parse_env_file, repo_root};

fn env_names(command: clap::Command) -> BTreeSet<String> {
    command
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// The `environment:` names of one compose service (map or list form).
fn compose_env(compose: &serde_yaml::Value, service: &str) -> BTreeSet<String> {
    let env = &compose["services"][service]["environment"];
    match env {
        serde_yaml::Value::Mapping(map) => map
            .keys()
            .filter_map(|k| k.as_str())
            .map(str::to_owned)
            .collect(),
        serde_yaml::Value::Sequence(list) => list
            .iter()
            .filter_map(|v| v.as_str())
            .map(|s| s.split_once('=').map_or(s, |(k, _)| k).to_owned())
            .collect(),
        _ => panic!("docker-compose.yml has no environment for service {service}"),
    }
}

/// What the local stack writes to its env file, read from the script that writes it.
fn local_stack_names() -> BTreeSet<String> {
    let script = std::fs::read_to_string(repo_root().join("deploy/local/up.sh")).unwrap();
    let block = script
        .split("<<ENV")
        .nth(1)
        .and_then(|rest| rest.split("\nENV\n").next())
        .expect("up.sh writes its env file with a <<ENV heredoc");
    parse_env_file(block).into_keys().collect()
}

#[test]
fn compose_local_scripts_and_services_agree_on_variable_names() {
    let compose: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("docker-compose.yml")).unwrap(),
    )
    .unwrap();
    let local = local_stack_names();
    for (service, accepted) in [
        ("ingestion", env_names(ingestion::Config::command())),
        ("export", env_names(export::Config::command())),
    ] {
        let compose_names = compose_env(&compose, service);
        // Every name compose sets is one the service reads (no typos, no stale names).
        let unknown: Vec<_> = compose_names.difference(&accepted).collect();
        assert!(
            unknown.is_empty(),
            "compose sets {unknown:?} for {service}, which it does not read"
        );
        // Every name the local stack provides that this service reads, compose provides too.
        let missing: Vec<_> = local
            .intersection(&accepted)
            .filter(|n| !compose_names.contains(*n))
            .collect();
        assert!(
            missing.is_empty(),
            "compose does not set {missing:?} for {service}"
        );
    }
    // Every name the local stack writes is read by a service or by the tests' harness.
    let read_by_services: BTreeSet<String> = env_names(ingestion::Config::command())
        .into_iter()
        .chain(env_names(export::Config::command()))
        .collect();
    let stack_only = ["CCE_STACK_DIR", "CCE_GARAGE_ADMIN_ENDPOINT"];
    let orphans: Vec<_> = local
        .iter()
        .filter(|n| !read_by_services.contains(*n) && !stack_only.contains(&n.as_str()))
        .collect();
    assert!(
        orphans.is_empty(),
        "the local stack writes {orphans:?}, which nothing reads"
    );
}
