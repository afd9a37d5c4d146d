# checks.vm: a NixOS VM with `services.strata.enable = true`. It waits for strata.service
# (Type=notify: READY=1 from the supervisor), runs the README's tour through strata-ctl
# (the block between <!-- tour:start --> and <!-- tour:end -->, read by ./readme-tour.nix),
# then checks what the module promises: the hardening, the socket group (alice is in it,
# bob is not), the cgroup delegation, the watchdog, that systemd's variables stay with the
# supervisor, reload, and a clean stop.
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
    users.users.alice = {
      isNormalUser = true;
      extraGroups = [ "strata" ];
    };
    users.users.bob.isNormalUser = true;
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
            "ProtectHome,PrivateTmp,CapabilityBoundingSet,SupplementaryGroups,"
            "RestrictAddressFamilies,RestrictNamespaces,WatchdogUSec,Delegate,KillMode"
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
        # None: the unit is a member of the socket group (SupplementaryGroups), so root
        # gives its sockets to it without CAP_CHOWN.
        assert props["CapabilityBoundingSet"] == "", props
        assert props["SupplementaryGroups"] == "strata", props
        assert props["RestrictAddressFamilies"] == "AF_UNIX", props
        assert props["WatchdogUSec"] == "30s", props
        assert props["Delegate"] == "yes", props
        assert props["KillMode"] == "mixed", props
        print(machine.succeed("systemd-analyze security strata.service || true"))

    with subtest("the socket group: members connect, others do not"):
        print(machine.succeed("stat -c '%a %U:%G %n' /run/strata /run/strata/*.sock"))
        machine.succeed("test \"$(stat -c '%a %U:%G' /run/strata)\" = '750 root:strata'")
        for sock in ["supervisor", "registry", "identity", "fs"]:
            machine.succeed(
                f"test \"$(stat -c '%a %U:%G' /run/strata/{sock}.sock)\" = '660 root:strata'"
            )
        # A member may connect; what it may do is still the issuance policy's (none here).
        machine.succeed("su alice -c 'strata-ctl registry ls'")
        print(machine.fail("su bob -c 'strata-ctl registry ls' 2>&1"))
        machine.fail("su bob -c 'test -x /run/strata'")

    with subtest("cgroups: the supervisor and its guard leave the unit's cgroup for a leaf"):
        unit = machine.succeed(
            "systemctl show --property=ControlGroup --value strata.service"
        ).strip()
        supervisor = machine.succeed("systemctl show --property=MainPID --value strata.service").strip()
        own = machine.succeed(f"cat /proc/{supervisor}/cgroup").strip()
        assert own.startswith(f"0::{unit}/strata-{supervisor}/supervisor"), own
        # Nothing is left in the unit's own cgroup, so its controllers reach the services.
        machine.succeed(f"test -z \"$(cat /sys/fs/cgroup{unit}/cgroup.procs)\"")
        enabled = machine.succeed(
            f"cat /sys/fs/cgroup{unit}/strata-{supervisor}/cgroup.subtree_control"
        )
        for controller in ["memory", "pids", "cpu"]:
            assert controller in enabled.split(), enabled

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
