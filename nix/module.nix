# services.strata: one Strata node under systemd. docs/NIXOS.md explains the choices.
#
# The supervisor runs as root in a hardened unit and starts the services of its manifest,
# which is rendered from `services.strata.services` by ./render-manifest.nix (pure, so its
# output for the defaults is checked without nixpkgs: nix/golden/manifest.toml) and
# validated at build time with `strata-supervisor --check-config`.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    any
    attrValues
    concatMap
    concatStringsSep
    filterAttrs
    hasPrefix
    literalExpression
    mkDefault
    mkEnableOption
    mkIf
    mkOption
    optional
    optionals
    removePrefix
    types
    unique
    ;

  cfg = config.services.strata;
  defaults = import ./defaults.nix;
  toTOML = import ./toml.nix { };
  tomlFormat = pkgs.formats.toml { };

  absolutePath = types.strMatching "/.*";

  policyFile =
    if cfg.issuancePolicy == null then
      null
    else
      pkgs.writeText "strata-issuance.toml" (toTOML cfg.issuancePolicy);

  manifestText = import ./render-manifest.nix {
    settings = cfg;
    issuancePolicyFile = if policyFile == null then null else "${policyFile}";
  };
  manifestUnchecked = pkgs.writeText "strata-manifest.toml" manifestText;
  manifestFile =
    if cfg.checkManifest then
      pkgs.runCommand "strata-manifest.toml" { nativeBuildInputs = [ cfg.package ]; } ''
        strata-supervisor --check-config ${manifestUnchecked}
        cp ${manifestUnchecked} $out
      ''
    else
      manifestUnchecked;
  # A stable path, so that a changed manifest is a reload (SIGHUP), not a restart.
  manifestPath = "/etc/strata/manifest.toml";

  services = attrValues (filterAttrs (_: s: s.enable) cfg.services);
  sandboxOf = s: s.sandbox or { };
  dropsPrivileges = any (s: (s.user or null) != null || (s.group or null) != null) services;
  namespaces = unique (concatMap (s: (sandboxOf s).namespaces or [ ]) services);
  landlockWrites = unique (concatMap (s: ((sandboxOf s).landlock or { }).write or [ ]) services);
  usesNetwork = cfg.tcpPorts != [ ] || cfg.cluster.etcd.endpoints != [ ];

  # The smallest bounding set for what the manifest asks. The supervisor runs as root;
  # with the default graph every service runs as root too, and nothing needs a
  # capability: the state and runtime directories, the delegated cgroup and the
  # processes are all root's own, and Landlock and no_new_privs need none.
  capabilities =
    optionals dropsPrivileges [
      # setgroups/setresgid/setresuid between fork and exec (crates/supervisor/src/process.rs).
      "CAP_SETUID"
      "CAP_SETGID"
      # The per-run notify socket is chowned to the service's user (src/readiness.rs).
      "CAP_CHOWN"
      # Stop, crash clean-up and the orphan guard signal process groups of other uids.
      "CAP_KILL"
      # Health probes connect to sockets the service's user owns (mode 0660), which root
      # without this capability may not.
      "CAP_DAC_OVERRIDE"
    ]
    # unshare(2) of net/ipc/uts namespaces for `sandbox.namespaces`.
    ++ optional (namespaces != [ ]) "CAP_SYS_ADMIN"
    ++ optional (any (p: p < 1024) cfg.tcpPorts) "CAP_NET_BIND_SERVICE"
    ++ cfg.extraCapabilities;

  underHome = p: any (h: p == h || hasPrefix "${h}/" p) [ "/home" "/root" "/run/user" ];

  inRun = hasPrefix "/run/" cfg.runtimeDir;
  inVarLib = hasPrefix "/var/lib/" cfg.stateDir;

  serviceType = types.submodule {
    freeformType = tomlFormat.type;
    options = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Whether the supervisor runs this service (false leaves it out of the manifest).";
      };
      exec = mkOption {
        type = types.str;
        description = ''
          The program: an absolute path, or a bare name looked up beside
          strata-supervisor (the package's own binaries), then on PATH.
        '';
      };
    };
  };
in
{
  options.services.strata = {
    enable = mkEnableOption "Strata, a capability-oriented service runtime";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "The Strata package: strata-supervisor and the services it runs beside it.";
    };

    nodeId = mkOption {
      type = types.strMatching "[^[:space:]]+";
      default = defaults.nodeId;
      description = "This node's id (STRATA_NODE_ID): identity issues tokens as `identity@<nodeId>`.";
    };

    runtimeDir = mkOption {
      type = absolutePath;
      default = defaults.runtimeDir;
      description = ''
        Sockets and identity.pub (STRATA_RUNTIME_DIR). Under /run it is the unit's
        RuntimeDirectory (removed when the unit stops); elsewhere it is created by
        systemd-tmpfiles and made writable with ReadWritePaths.
      '';
    };

    stateDir = mkOption {
      type = absolutePath;
      default = defaults.stateDir;
      description = ''
        Keys, revocations, the audit log and service logs (STRATA_STATE_DIR). Under
        /var/lib it is the unit's StateDirectory; elsewhere it is created by
        systemd-tmpfiles and made writable with ReadWritePaths.
      '';
    };

    supervisor = mkOption {
      type = tomlFormat.type;
      default = defaults.supervisor;
      example = {
        control_socket_mode = "0660";
      };
      description = "The manifest's `[supervisor]` table (read at start-up; a reload does not apply it).";
    };

    services = mkOption {
      type = types.attrsOf serviceType;
      default = { };
      example = literalExpression ''
        {
          fs.enable = false;
          web = {
            exec = "''${pkgs.my-web}/bin/web";
            args = [ "--port" "8080" ];
            depends_on = [ "identity" ];
            readiness = "notify";
            user = "web";
            limits = { memory_max = "256M"; pids_max = 64; };
            sandbox.landlock = { read = [ "/nix/store" ]; write = [ "/var/lib/web" ]; };
          };
        }
      '';
      description = ''
        The services the supervisor runs, rendered to its TOML manifest: each attribute is
        a `[[service]]` named after it, with the manifest's keys as they are
        (crates/supervisor/README.md: `exec`, `args`, `env`, `depends_on`, `readiness`,
        `restart`, `user`, `limits`, `sandbox`, ...). Strata's own registry, identity and
        fs are defined here by default (set `<name>.enable = false` to leave one out). The
        manifest is checked with `strata-supervisor --check-config` at build time, and a
        change reloads the supervisor (SIGHUP) instead of restarting it.
      '';
    };

    issuancePolicy = mkOption {
      type = types.nullOr tomlFormat.type;
      default = defaults.issuancePolicy;
      example = literalExpression ''
        {
          grant = [{
            uids = [ 1000 ];
            services = [ "fs" ];
            rights = [ "fs.open" "fs.read" "fs.list" "fs.stat" ];
            path_prefixes = [ "/srv/data" ];
            max_ttl_seconds = 3600;
          }];
        }
      '';
      description = ''
        identity's issuance policy (docs/SECURITY.md), rendered to TOML and given to the
        `identity` service as STRATA_ISSUANCE_POLICY. Null: identity reads
        `<stateDir>/issuance.toml` if it exists, and otherwise only root may obtain
        capabilities. An invalid policy stops identity from starting (fail closed).
      '';
    };

    fs.exportRoots = mkOption {
      type = types.listOf absolutePath;
      default = defaults.fs.exportRoots;
      example = [ "/srv/data" ];
      description = ''
        Directories the fs service exports (STRATA_FS_EXPORT_ROOTS in its environment).
        Empty: fs exports `<stateDir>/export` and creates it. Listed roots must exist; fs
        refuses to start otherwise. Roots under /home, /root or /run/user turn
        ProtectHome into "read-only" instead of hiding those trees.
      '';
    };

    cluster.etcd = {
      endpoints = mkOption {
        type = types.listOf types.str;
        default = defaults.cluster.etcd.endpoints;
        example = [ "https://10.0.0.1:2379" ];
        description = ''
          etcd endpoints for multi-node operation. Cluster mode is not implemented yet:
          these settings are only passed through, as STRATA_ETCD_ENDPOINTS
          (comma-separated) and STRATA_ETCD_{CA,CERT,KEY}_FILE in the environment of the
          supervisor and of registry, identity and fs, and nothing reads them. Setting
          endpoints also allows AF_INET and AF_INET6 in the unit.
        '';
      };
      caFile = mkOption {
        type = types.nullOr absolutePath;
        default = defaults.cluster.etcd.caFile;
        description = "CA bundle for etcd's TLS (passed through; see `endpoints`). A path string, so it is not copied into the store.";
      };
      certFile = mkOption {
        type = types.nullOr absolutePath;
        default = defaults.cluster.etcd.certFile;
        description = "Client certificate for etcd (passed through; see `endpoints`).";
      };
      keyFile = mkOption {
        type = types.nullOr absolutePath;
        default = defaults.cluster.etcd.keyFile;
        description = "Client key for etcd (passed through; see `endpoints`). Keep it out of the store.";
      };
    };

    tcpPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
      example = [ 8080 ];
      description = ''
        TCP ports the node's services listen on. Strata's own services use Unix sockets
        only; list the ports of your manifest services here. Any port allows AF_INET and
        AF_INET6 in the unit, and a port below 1024 adds CAP_NET_BIND_SERVICE.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open `tcpPorts` in the firewall.";
    };

    watchdogSec = mkOption {
      type = types.nullOr types.str;
      default = "30s";
      description = ''
        systemd's WatchdogSec: the supervisor sends WATCHDOG=1 every half of it from its
        event loop, and systemd restarts a supervisor that stops. Null turns it off.
      '';
    };

    checkManifest = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Validate the rendered manifest with `strata-supervisor --check-config` at build
        time (runs the package on the build machine; turn off when cross-compiling).
      '';
    };

    extraCapabilities = mkOption {
      type = types.listOf (types.strMatching "CAP_[A-Z_]+");
      default = [ ];
      example = [ "CAP_DAC_READ_SEARCH" ];
      description = ''
        Capabilities added to the unit's bounding set beyond what the manifest is seen to
        need, e.g. CAP_DAC_READ_SEARCH for an fs export root holding files root does not
        own and may not read.
      '';
    };

    readWritePaths = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "/srv/uploads" ];
      description = ''
        Paths services may write besides the state and runtime directories (the unit is
        ProtectSystem=strict). Landlock `write` paths of the services are added,
        prefixed with "-" (ignored when missing).
      '';
    };
  };

  config = mkIf cfg.enable {
    services.strata.services = lib.mapAttrs (_: lib.mapAttrs (_: mkDefault)) defaults.services;

    assertions = [
      {
        assertion = (cfg.cluster.etcd.certFile == null) == (cfg.cluster.etcd.keyFile == null);
        message = "services.strata.cluster.etcd: certFile and keyFile go together.";
      }
    ];
    warnings = optional (cfg.openFirewall && cfg.tcpPorts == [ ]) ''
      services.strata.openFirewall is set but services.strata.tcpPorts is empty: Strata's
      own services listen on Unix sockets only, so nothing is opened.
    '';

    environment.systemPackages = [ cfg.package ];
    # strata-ctl finds the node's sockets from any shell.
    environment.variables.STRATA_RUNTIME_DIR = cfg.runtimeDir;
    environment.etc."strata/manifest.toml".source = manifestFile;

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall cfg.tcpPorts;

    systemd.tmpfiles.rules =
      optional (!inRun) "d ${cfg.runtimeDir} 0755 root root -"
      ++ optional (!inVarLib) "d ${cfg.stateDir} 0750 root root -";

    systemd.services.strata = {
      description = "Strata supervisor";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      reloadTriggers = [ manifestFile ];

      environment = {
        STRATA_CONFIG = manifestPath;
        STRATA_RUNTIME_DIR = cfg.runtimeDir;
        STRATA_STATE_DIR = cfg.stateDir;
        STRATA_NODE_ID = cfg.nodeId;
      }
      // lib.optionalAttrs (cfg.cluster.etcd.endpoints != [ ]) (
        {
          STRATA_ETCD_ENDPOINTS = concatStringsSep "," cfg.cluster.etcd.endpoints;
        }
        // lib.optionalAttrs (cfg.cluster.etcd.caFile != null) {
          STRATA_ETCD_CA_FILE = cfg.cluster.etcd.caFile;
        }
        // lib.optionalAttrs (cfg.cluster.etcd.certFile != null) {
          STRATA_ETCD_CERT_FILE = cfg.cluster.etcd.certFile;
          STRATA_ETCD_KEY_FILE = cfg.cluster.etcd.keyFile;
        }
      );

      serviceConfig = {
        # READY=1 once every service is Healthy or at rest (crates/supervisor/src/sd_notify.rs),
        # STOPPING=1 at shutdown, WATCHDOG=1 every WatchdogSec/2.
        Type = "notify";
        NotifyAccess = "main";
        WatchdogSec = mkIf (cfg.watchdogSec != null) cfg.watchdogSec;
        ExecStart = "${cfg.package}/bin/strata-supervisor";
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        Restart = "on-failure";
        RestartSec = "2s";
        # SIGTERM to the supervisor alone: it stops its services itself, in reverse
        # dependency order, each with its drain. Whatever is left at TimeoutStopSec is
        # SIGKILLed by systemd.
        KillMode = "mixed";
        # The supervisor gives each service its own cgroup beneath the unit's, and
        # enables memory/pids/cpu there for `limits`.
        Delegate = true;

        RuntimeDirectory = mkIf inRun (removePrefix "/run/" cfg.runtimeDir);
        # Services that run as other users must reach their sockets.
        RuntimeDirectoryMode = "0755";
        StateDirectory = mkIf inVarLib (removePrefix "/var/lib/" cfg.stateDir);
        StateDirectoryMode = "0750";

        # Hardening. The supervisor runs as root because it starts services as other
        # users; the bounding set keeps root to what the manifest needs (see
        # `capabilities` above: empty for the default graph).
        CapabilityBoundingSet = concatStringsSep " " capabilities;
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ReadWritePaths =
          optional (!inRun) cfg.runtimeDir
          ++ optional (!inVarLib) cfg.stateDir
          ++ map (p: "-${p}") landlockWrites
          ++ cfg.readWritePaths;
        ProtectHome = if any underHome cfg.fs.exportRoots then "read-only" else true;
        PrivateTmp = true;
        RestrictAddressFamilies = [ "AF_UNIX" ] ++ optionals usesNetwork [
          "AF_INET"
          "AF_INET6"
        ];
        # unshare(2) is allowed for exactly the namespaces services ask for.
        RestrictNamespaces = if namespaces == [ ] then true else concatStringsSep " " namespaces;
        # @system-service has everything the supervisor does (fork/exec, setresuid,
        # setgroups, chown, unshare, prctl, openat2, signals); Landlock's three calls, which
        # fs and services with `sandbox.landlock` make, are not in every systemd's set.
        SystemCallFilter = [
          "@system-service"
          "landlock_create_ruleset"
          "landlock_add_rule"
          "landlock_restrict_self"
        ];
        SystemCallErrorNumber = "EPERM";
        SystemCallArchitectures = "native";
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        LockPersonality = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        # Not set, on purpose: ProtectControlGroups and ProtectKernelTunables would make
        # /sys/fs/cgroup read-only and take the per-service cgroups away; ProtectProc and
        # PrivateUsers would hide or remap the users services run as; ProtectClock and
        # PrivateDevices restrict device access for every service of the manifest.
      };
    };
  };
}
