# checks.vm: a NixOS VM with `services.strata.enable = true`. It waits for strata.service
# (Type=notify: READY=1 from the supervisor), runs the README's tour through strata-ctl
# (the block between <!-- tour:start --> and <!-- tour:end -->, read by ./readme-tour.nix),
# then checks what the module promises: the hardening, the watchdog, that systemd's
# variables stay with the supervisor, reload, and a clean stop.
{
  pkgs,
  module,
}:
let
  steps = import ./readme-tour.nix (builtins.readFile ../README.md);
  stepsFile = pkgs.writeText "strata-readme-tour.json" (builtins.toJSON steps);
  healthy = "systemctl show --property=StatusText --value strata.service | grep -qx 'all 3 services Healthy'";
in
pkgs.testers.runNixOSTest {
  name = "strata";

  nodes.machine = {
    imports = [ module ];
    services.strata.enable = true;
  };

  testScript = ''
    import json
    import shlex

    with open("${stepsFile}") as f:
        steps = json.load(f)

    machine.wait_for_unit("strata.service")
    machine.wait_until_succeeds("${healthy}")

    variables: dict[str, str] = {}
    with subtest("the README tour"):
        for step in steps:
            exports = "".join(
                f"export {name}={shlex.quote(value)}; " for name, value in variables.items()
            )
            command = exports + step["command"]
            if step["expectFailure"]:
                print(machine.fail(command + " 2>&1"))
            elif step["assign"] is not None:
                variables[step["assign"]] = machine.succeed(command).strip()
            else:
                print(machine.succeed(command))

    with subtest("a revoked token stays revoked across a restart"):
        if "TOKEN" in variables:
            machine.systemctl("restart strata.service")
            machine.wait_for_unit("strata.service")
            machine.wait_until_succeeds("${healthy}")
            token = shlex.quote(variables["TOKEN"])
            output = machine.fail(f"strata-ctl --token {token} fs ls 2>&1")
            assert "revoked" in output, output

    with subtest("the unit is hardened as documented"):
        shown = machine.succeed(
            "systemctl show strata.service --property=Type,NoNewPrivileges,ProtectSystem,"
            "ProtectHome,PrivateTmp,CapabilityBoundingSet,RestrictAddressFamilies,"
            "RestrictNamespaces,WatchdogUSec,Delegate,KillMode"
        )
        props: dict[str, str] = {}
        for line in shown.strip().splitlines():
            key, _, value = line.partition("=")
            props[key] = value
        print(props)
        assert props["Type"] == "notify", props
        assert props["NoNewPrivileges"] == "yes", props
        assert props["ProtectSystem"] == "strict", props
        assert props["ProtectHome"] == "yes", props
        assert props["PrivateTmp"] == "yes", props
        assert props["CapabilityBoundingSet"] == "", props
        assert props["RestrictAddressFamilies"] == "AF_UNIX", props
        assert props["WatchdogUSec"] == "30s", props
        assert props["Delegate"] == "yes", props
        assert props["KillMode"] == "mixed", props
        print(machine.succeed("systemd-analyze security strata.service || true"))

    with subtest("the watchdog is fed"):
        before = machine.succeed(
            "systemctl show --property=WatchdogTimestampMonotonic --value strata.service"
        ).strip()
        machine.wait_until_succeeds(
            "test \"$(systemctl show --property=WatchdogTimestampMonotonic --value strata.service)\" != "
            + shlex.quote(before)
        )

    with subtest("systemd's variables do not reach the services"):
        for binary in ["strata-registry", "strata-identity", "strata-fs"]:
            pid = machine.succeed(f"pgrep -x {binary}").strip()
            environ = machine.succeed(f"tr '\\0' '\\n' < /proc/{pid}/environ")
            assert "STRATA_SERVICE=" in environ, environ
            for variable in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"]:
                assert f"{variable}=" not in environ, environ

    with subtest("reload keeps the services"):
        machine.succeed("systemctl reload strata.service")
        machine.succeed("strata-ctl status")
        machine.wait_until_succeeds("${healthy}")

    with subtest("stop stops everything"):
        machine.systemctl("stop strata.service")
        result = machine.succeed("systemctl show --property=Result --value strata.service").strip()
        assert result == "success", result
        machine.fail("pgrep -x strata-registry")
        machine.fail("pgrep -x strata-fs")
  '';
}
