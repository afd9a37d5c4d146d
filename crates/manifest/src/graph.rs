//! The dependency graph: start order, cycle detection, and who depends on whom.
//!
//! Edges point from a service to what it `depends_on`. The start order puts every
//! dependency before its dependents and otherwise keeps declaration order, so the same
//! manifest always starts (and, reversed, stops) the same way.

use crate::{ManifestError, ServiceSpec};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, PartialEq)]
enum Mark {
    Visiting,
    Done,
}

/// Dependencies first, then declaration order. A cycle is refused with its path
/// (`a -> b -> a`); an unknown dependency with the service that names it.
pub fn start_order(services: &[ServiceSpec]) -> Result<Vec<String>, ManifestError> {
    let by_name: BTreeMap<&str, &ServiceSpec> =
        services.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
    let mut order = Vec::with_capacity(services.len());
    let mut path: Vec<&str> = Vec::new();
    for service in services {
        visit(
            service.name.as_str(),
            &by_name,
            &mut marks,
            &mut path,
            &mut order,
        )?;
    }
    Ok(order)
}

fn visit<'a>(
    name: &'a str,
    by_name: &BTreeMap<&'a str, &'a ServiceSpec>,
    marks: &mut BTreeMap<&'a str, Mark>,
    path: &mut Vec<&'a str>,
    order: &mut Vec<String>,
) -> Result<(), ManifestError> {
    match marks.get(name) {
        Some(Mark::Done) => return Ok(()),
        Some(Mark::Visiting) => {
            let start = path.iter().position(|n| *n == name).unwrap_or(0);
            let mut cycle: Vec<String> = path[start..].iter().map(|s| (*s).to_owned()).collect();
            cycle.push(name.to_owned());
            return Err(ManifestError::Cycle(cycle));
        }
        None => {}
    }
    let spec = by_name[name];
    marks.insert(name, Mark::Visiting);
    path.push(name);
    for dep in &spec.depends_on {
        if !by_name.contains_key(dep.as_str()) {
            return Err(ManifestError::UnknownDependency {
                service: name.to_owned(),
                dependency: dep.clone(),
            });
        }
        let dep = by_name[dep.as_str()].name.as_str();
        visit(dep, by_name, marks, path, order)?;
    }
    path.pop();
    marks.insert(name, Mark::Done);
    order.push(name.to_owned());
    Ok(())
}

/// Every service that depends on `name`, directly or through others, in an order in
/// which they can be stopped (dependents of dependents first).
pub fn dependents_closure(services: &[ServiceSpec], name: &str) -> Vec<String> {
    let mut found: BTreeSet<&str> = BTreeSet::new();
    let mut frontier = vec![name];
    while let Some(current) = frontier.pop() {
        for s in services {
            if s.depends_on.iter().any(|d| d == current) && found.insert(s.name.as_str()) {
                frontier.push(s.name.as_str());
            }
        }
    }
    let mut stop_order: Vec<String> = start_order(services)
        .unwrap_or_else(|_| services.iter().map(|s| s.name.clone()).collect())
        .into_iter()
        .filter(|n| found.contains(n.as_str()))
        .collect();
    stop_order.reverse();
    stop_order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, deps: &[&str]) -> ServiceSpec {
        let mut s = ServiceSpec::new(name, "x");
        s.depends_on = deps.iter().map(|d| (*d).to_owned()).collect();
        s
    }

    #[test]
    fn dependencies_come_first_and_declaration_order_is_kept() {
        let services = [
            svc("web", &["db", "cache"]),
            svc("cache", &[]),
            svc("db", &["disk"]),
            svc("disk", &[]),
            svc("batch", &[]),
        ];
        assert_eq!(
            start_order(&services).unwrap(),
            ["disk", "db", "cache", "web", "batch"]
        );
    }

    #[test]
    fn cycles_report_the_path() {
        let services = [svc("a", &["b"]), svc("b", &["c"]), svc("c", &["b"])];
        match start_order(&services) {
            Err(ManifestError::Cycle(path)) => assert_eq!(path, ["b", "c", "b"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dependents_are_found_transitively_in_stop_order() {
        let services = [
            svc("a", &[]),
            svc("b", &["a"]),
            svc("c", &["b"]),
            svc("d", &[]),
            svc("e", &["a", "d"]),
        ];
        assert_eq!(dependents_closure(&services, "a"), ["e", "c", "b"]);
        assert_eq!(dependents_closure(&services, "d"), ["e"]);
        assert!(dependents_closure(&services, "c").is_empty());
    }
}
