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
    all
    any
    attrValues
    concatMap
    concatStringsSep
    filter
    filterAttrs
    hasPrefix
    last
    literalExpression
    mkDefault
    mkEnableOption
    mkIf
    mkOption
    optional
    optionalAttrs
    optionals
    removePrefix
    splitString
    toInt
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
  # Cluster mode (crates/supervisor/src/main.rs `cluster_env`; docs/OPERATIONS.md
  # "Running a cluster"): the supervisor reads these from its own environment, checks them
  # once and hands them to every service.
  cluster = cfg.cluster;
  clustered = cluster.etcd.endpoints != [ ];
  tls = cluster.tls;
  tlsFiles = [
    tls.caFile
    tls.certFile
    tls.keyFile
  ];
  hasTls = all (f: f != null) tlsFiles;
  # TLS and authentication to etcd (crates/cluster/src/config/access.rs checks the same).
  etcd = cluster.etcd;
  etcdHttps = any (hasPrefix "https://") etcd.endpoints;
  etcdHttp = any (hasPrefix "http://") etcd.endpoints;
  etcdFiles = filter (f: f != null) [
    etcd.caFile
    etcd.certFile
    etcd.keyFile
    etcd.passwordFile
  ];
  # The mutual-TLS listeners: fs's from `cluster.fsListen`, and any manifest service's own
  # `tcp` key.
  tcpListeners = unique (
    optional (cluster.fsListen != null && (cfg.services.fs.enable or false)) cluster.fsListen
    ++ concatMap (s: optional ((s.tcp or null) != null) s.tcp) services
  );
  portOf = listen: toInt (last (splitString ":" listen));
  listenerPorts = unique (map portOf tcpListeners);
  # What the supervisor's `tcp` check refuses (crates/supervisor/src/manifest.rs), in the
  # spellings the option's type lets through, so the mistake shows at evaluation.
  unusableListener =
    listen:
    let
      port = portOf listen;
    in
    port == 0 || port > 65535 || hasPrefix "0.0.0.0:" listen || hasPrefix "[::]:" listen;
  usesNetwork = cfg.tcpPorts != [ ] || clustered || tcpListeners != [ ];

  # The smallest bounding set for what the manifest asks. The supervisor runs as root;
  # with the default graph every service runs as root too, and nothing needs a
  # capability: the state and runtime directories, the delegated cgroup and the
  # processes are all root's own, and Landlock and no_new_privs need none. The socket
  # group needs none either: the unit is a member of it (SupplementaryGroups below, which
  # the services inherit), and an owner may give its own files to a group it is in
  # without CAP_CHOWN (crates/ipc/src/server/bind.rs, crates/supervisor/src/supervisor.rs).
  # CAP_CHOWN would let any service running as root give any file it can reach to anyone.
  capabilities = unique (
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
    ++ optional (any (p: p < 1024) (cfg.tcpPorts ++ listenerPorts)) "CAP_NET_BIND_SERVICE"
    ++ cfg.extraCapabilities
  );

  underHome = p: any (h: p == h || hasPrefix "${h}/" p) [ "/home" "/root" "/run/user" ];
  # Files services read from under those trees: ProtectHome must leave them visible.
  readsUnderHome = any underHome (
    cfg.fs.exportRoots ++ (if hasTls then tlsFiles else [ ]) ++ etcdFiles
  );

  inRun = hasPrefix "/run/" cfg.runtimeDir;
  inVarLib = hasPrefix "/var/lib/" cfg.stateDir;

  # One `[[service.capability]]` of the manifest, with exactly its keys (crates/supervisor/README.md,
  # docs/OPERATIONS.md "Routing capabilities to services"); null ones are left out of the
  # manifest, so the supervisor's defaults apply. The values are checked by --check-config.
  capabilityType = types.submodule {
    options = {
      name = mkOption {
        type = types.str;
        example = "photos";
        description = "The file name in the service's credentials directory ([A-Za-z0-9][A-Za-z0-9._-]{0,63}, unique per service).";
      };
      service = mkOption {
        type = types.str;
        example = "fs";
        description = "The service the token is for.";
      };
      rights = mkOption {
        type = types.listOf types.str;
        example = [
          "fs.list"
          "fs.read"
        ];
        description = "Its rights: 1 to 64 methods of `service`, e.g. `fs.read`.";
      };
      path_prefix = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/srv/photos";
        description = "The token's path_prefix constraint (absolute, normalised).";
      };
      rate_limit = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "200rps";
        description = "The token's rate_limit constraint.";
      };
      ttl = mkOption {
        type = types.str;
        default = "1h";
        description = "The token's lifetime (3s to 720h); a fresh one replaces it at two thirds of it.";
      };
      grace = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "5m";
        description = "How long a replaced token stays valid (at most a third of ttl; null: a sixth of it).";
      };
      on_rotate = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "SIGHUP";
        description = "A signal sent to the service after its file was replaced.";
      };
    };
  };

  serviceType = types.submodule {
    freeformType = tomlFormat.type;
    options = {
      capabilities = mkOption {
        type = types.listOf capabilityType;
        default = [ ];
        description = ''
          Capabilities the supervisor obtains from identity for this service and keeps in
          `<runtimeDir>/credentials/<service>/<name>` (its $CREDENTIALS_DIRECTORY), rotated
          before they expire and revoked when the run ends; rendered as the manifest's
          `[[service.capability]]` entries. The service then depends on identity.
        '';
      };
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
      type = types.strMatching "[a-z][a-z0-9-]{0,62}";
      default = defaults.nodeId;
      example = "node-a";
      description = ''
        This node's id (STRATA_NODE_ID): identity issues tokens as `identity@<nodeId>`,
        and in cluster mode it names the node to the others (unique in the cluster; a
        removed node's id is never trusted again).
      '';
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

    group = mkOption {
      type = types.nullOr (types.strMatching "[a-z_][a-z0-9_-]{0,31}");
      default = "strata";
      example = "strata";
      description = ''
        The socket group (the supervisor's `--socket-group`, STRATA_SOCKET_GROUP): the
        runtime directory is `0750 root:<group>` and every socket `0660 root:<group>`, so
        the group's members may connect; the module creates the group. Add a user with
        `users.users.<name>.extraGroups = [ "strata" ];`. Connecting is all it gives: what
        a member obtains is still the issuance policy's (`issuancePolicy`), and
        controlling the node (`strata-ctl svc stop`, ...) still needs root or a capability
        for it. Null: only root may connect.
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

    cluster = {
      etcd.endpoints = mkOption {
        type = types.listOf (types.strMatching "https?://[^,[:space:]]+");
        default = defaults.cluster.etcd.endpoints;
        example = [
          "https://10.0.0.1:2379"
          "https://10.0.0.2:2379"
        ];
        description = ''
          etcd (v3 API) client URLs; setting any turns cluster mode on
          (STRATA_ETCD_ENDPOINTS, comma-separated). Empty: the node runs alone and nothing
          leaves the machine. All https:// (with `caFile`) or all http://; over plain
          http:// anyone on that network can read and change the cluster's state
          (docs/OPERATIONS.md, "Running a cluster"). Also allows AF_INET and AF_INET6 in
          the unit.
        '';
      };

      etcd.caFile = mkOption {
        type = types.nullOr absolutePath;
        default = defaults.cluster.etcd.caFile;
        example = "/etc/strata/etcd/ca.crt";
        description = ''
          The CA certificate (PEM) that signed etcd's server certificate (STRATA_ETCD_CA);
          needed for https:// endpoints, refused with http:// ones. It may be the cluster
          CA. The only root trusted for etcd.
        '';
      };

      etcd.certFile = mkOption {
        type = types.nullOr absolutePath;
        default = defaults.cluster.etcd.certFile;
        example = "/etc/strata/etcd/node.crt";
        description = ''
          This node's TLS client certificate for etcd, PEM (STRATA_ETCD_CERT), for an
          etcd run with --client-cert-auth. Goes with `keyFile`.
        '';
      };

      etcd.keyFile = mkOption {
        type = types.nullOr absolutePath;
        default = defaults.cluster.etcd.keyFile;
        example = "/etc/strata/etcd/node.key";
        description = ''
          The private key of `certFile`, PEM (STRATA_ETCD_KEY): mode 0600 or stricter and
          out of the store (a path string).
        '';
      };

      etcd.user = mkOption {
        type = types.nullOr (types.strMatching "[^[:space:]]{1,128}");
        default = defaults.cluster.etcd.user;
        example = "strata-node-a";
        description = ''
          The etcd user this node authenticates as (STRATA_ETCD_USER); its role should
          grant readwrite on the cluster prefix only. Goes with `passwordFile`.
        '';
      };

      etcd.passwordFile = mkOption {
        type = types.nullOr absolutePath;
        default = defaults.cluster.etcd.passwordFile;
        example = "/run/secrets/strata-etcd-password";
        description = ''
          A file holding the etcd user's password (STRATA_ETCD_PASSWORD_FILE): a regular
          file of mode 0600 or stricter, at most 4 KiB, a trailing newline not part of
          it. A path string, so the password never enters the store.
        '';
      };

      maxStaleness = mkOption {
        type = types.strMatching "off|[0-9]{1,9}(ms|s|m|h)";
        default = defaults.cluster.maxStaleness;
        example = "10s";
        description = ''
          How long the node may go without confirming it is current with etcd before its
          verifiers refuse protected requests (STRATA_CLUSTER_MAX_STALENESS, in cluster
          mode): a duration from 1s to 1h, or "off" (a cut-off node then honours tokens
          revoked elsewhere for as long as the cut lasts).
        '';
      };

      maxClockSkew = mkOption {
        type = types.strMatching "[0-9]{1,9}(ms|s|m)";
        default = defaults.cluster.maxClockSkew;
        example = "2s";
        description = ''
          The most two nodes' clocks may differ (STRATA_CLUSTER_MAX_CLOCK_SKEW, in cluster
          mode, 1ms to 5m): verifiers count a token as expired that long before its exp, and
          issuance refuses a ttl of twice this or less. Keep the nodes on NTP.
        '';
      };

      prefix = mkOption {
        type = types.strMatching "/[^[:space:]]*[^/[:space:]]";
        default = defaults.cluster.prefix;
        description = ''
          The etcd key prefix shared by the cluster's nodes (STRATA_CLUSTER_PREFIX, in
          cluster mode): starts with "/", does not end with one.
        '';
      };

      leaseTtl = mkOption {
        type = types.ints.between 2 300;
        default = defaults.cluster.leaseTtl;
        description = ''
          Seconds of the node's etcd lease (STRATA_LEASE_TTL_SECS, in cluster mode): a
          node that dies leaves the registry within this time.
        '';
      };

      tls = {
        caFile = mkOption {
          type = types.nullOr absolutePath;
          default = defaults.cluster.tls.caFile;
          example = "/etc/strata/tls/ca.crt";
          description = ''
            The cluster CA's certificate, PEM (STRATA_TLS_CA). caFile, certFile and
            keyFile go together, and are needed for `fsListen` (mutual TLS between
            nodes). Path strings, so nothing is copied into the store.
          '';
        };
        certFile = mkOption {
          type = types.nullOr absolutePath;
          default = defaults.cluster.tls.certFile;
          example = "/etc/strata/tls/node.crt";
          description = "This node's certificate, PEM, from `strata-ctl cluster add-node` (STRATA_TLS_CERT).";
        };
        keyFile = mkOption {
          type = types.nullOr absolutePath;
          default = defaults.cluster.tls.keyFile;
          example = "/etc/strata/tls/node.key";
          description = ''
            This node's private key, PEM (STRATA_TLS_KEY). Keep it out of the store: it
            must be mode 0600 (or 0400) and owned by the user the services that read it
            run as, which is root unless the service sets `user`. A key readable by group
            or others is refused.
          '';
        };
      };

      fsListen = mkOption {
        type = types.nullOr (
          types.strMatching "(([0-9]{1,3}[.]){3}[0-9]{1,3}|[[][0-9A-Fa-f:.]+[]]):[0-9]{1,5}"
        );
        default = defaults.cluster.fsListen;
        example = "10.0.0.5:7101";
        description = ''
          fs's mutual-TLS listener for other nodes, "ip:port" or "[ipv6]:port": rendered
          as fs's `tcp` key in the manifest, and registered as `tcp://<fsListen>`, so it
          must be the particular address other nodes reach (not 0.0.0.0, [::] or port
          0). Needs the `tls` files. Allows AF_INET and AF_INET6 in the unit;
          `openFirewall` opens its port.
        '';
      };
    };

    tcpPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
      example = [ 8080 ];
      description = ''
        TCP ports the node's services listen on, besides the `tcp` listeners
        (`cluster.fsListen` and services' `tcp` keys, which are counted already). Strata's
        own services otherwise use Unix sockets only; list the ports of your manifest
        services here. Any port allows AF_INET and AF_INET6 in the unit, and a port
        below 1024 adds CAP_NET_BIND_SERVICE.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open `tcpPorts` and the ports of the `tcp` listeners (`cluster.fsListen`) in the firewall.";
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
        assertion = !(etcdHttps && etcdHttp);
        message = "services.strata.cluster.etcd.endpoints: the endpoints mix http:// and https://; use https:// for every one.";
      }
      {
        assertion = !etcdHttps || etcd.caFile != null;
        message = ''
          services.strata.cluster.etcd.endpoints are https://, so
          services.strata.cluster.etcd.caFile must name the CA certificate that signed
          etcd's server certificate (it may be the cluster CA).
        '';
      }
      {
        assertion = etcdHttps || all (f: f == null) [ etcd.caFile etcd.certFile etcd.keyFile ];
        message = "services.strata.cluster.etcd.{caFile,certFile,keyFile} need https:// etcd endpoints.";
      }
      {
        assertion = (etcd.certFile == null) == (etcd.keyFile == null);
        message = "services.strata.cluster.etcd: certFile and keyFile go together: set both or neither.";
      }
      {
        assertion = (etcd.user == null) == (etcd.passwordFile == null);
        message = "services.strata.cluster.etcd: user and passwordFile go together: set both or neither.";
      }
      {
        assertion = all (f: f == null) tlsFiles || hasTls;
        message = "services.strata.cluster.tls: caFile, certFile and keyFile go together: set all three or none.";
      }
      {
        assertion = tcpListeners == [ ] || hasTls;
        message = ''
          services.strata.cluster.fsListen (or a service's `tcp`) needs
          services.strata.cluster.tls.{caFile,certFile,keyFile}: the listener accepts only
          clients with a certificate from the cluster CA.
        '';
      }
      {
        assertion = !any unusableListener tcpListeners;
        message = ''
          services.strata: a `tcp` listener (${concatStringsSep ", " tcpListeners}) must be the
          particular ip:port other nodes reach the service at (not 0.0.0.0, [::], or port 0,
          and a port up to 65535).
        '';
      }
      {
        assertion = cluster.fsListen == null || (cfg.services.fs.tcp or null) == null;
        message = "services.strata: set fs's listener with cluster.fsListen or services.fs.tcp, not both.";
      }
    ];
    warnings = optional (cfg.openFirewall && cfg.tcpPorts == [ ] && listenerPorts == [ ]) ''
      services.strata.openFirewall is set but there is nothing to open: tcpPorts is empty
      and no service has a `tcp` listener (cluster.fsListen); Strata's own services listen
      on Unix sockets only otherwise.
    '';

    users.groups = mkIf (cfg.group != null) { ${cfg.group} = { }; };

    environment.systemPackages = [ cfg.package ];
    # strata-ctl finds the node's sockets from any shell.
    environment.variables.STRATA_RUNTIME_DIR = cfg.runtimeDir;
    environment.etc."strata/manifest.toml".source = manifestFile;

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall (
      unique (cfg.tcpPorts ++ listenerPorts)
    );

    systemd.tmpfiles.rules =
      optional (!inRun) "d ${cfg.runtimeDir} 0750 root ${if cfg.group == null then "root" else cfg.group} -"
      ++ optional (!inVarLib) "d ${cfg.stateDir} 0750 root root -";

    systemd.services.strata = {
      description = "Strata supervisor";
      wantedBy = [ "multi-user.target" ];
      # A listener binds a particular address, which must be configured first. etcd is not
      # waited for: a node whose etcd is down starts and works locally.
      after = [ "network.target" ] ++ optional usesNetwork "network-online.target";
      wants = optional usesNetwork "network-online.target";
      reloadTriggers = [ manifestFile ];

      environment = {
        STRATA_CONFIG = manifestPath;
        STRATA_RUNTIME_DIR = cfg.runtimeDir;
        STRATA_STATE_DIR = cfg.stateDir;
        STRATA_NODE_ID = cfg.nodeId;
      }
      // optionalAttrs (cfg.group != null) {
        # The supervisor resolves the name once at start and hands services its gid.
        STRATA_SOCKET_GROUP = cfg.group;
      }
      // optionalAttrs clustered {
        STRATA_ETCD_ENDPOINTS = concatStringsSep "," cluster.etcd.endpoints;
        STRATA_CLUSTER_PREFIX = cluster.prefix;
        STRATA_LEASE_TTL_SECS = toString cluster.leaseTtl;
        STRATA_CLUSTER_MAX_STALENESS = cluster.maxStaleness;
        STRATA_CLUSTER_MAX_CLOCK_SKEW = cluster.maxClockSkew;
      }
      // optionalAttrs (clustered && etcd.caFile != null) {
        STRATA_ETCD_CA = etcd.caFile;
      }
      // optionalAttrs (clustered && etcd.certFile != null) {
        STRATA_ETCD_CERT = etcd.certFile;
        STRATA_ETCD_KEY = etcd.keyFile;
      }
      // optionalAttrs (clustered && etcd.user != null) {
        STRATA_ETCD_USER = etcd.user;
        STRATA_ETCD_PASSWORD_FILE = etcd.passwordFile;
      }
      // optionalAttrs hasTls {
        STRATA_TLS_CA = tls.caFile;
        STRATA_TLS_CERT = tls.certFile;
        STRATA_TLS_KEY = tls.keyFile;
      };

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
        # enables memory/pids/cpu there for `limits`; to do so it first moves itself
        # into a leaf of its own (docs/NIXOS.md, "cgroups under systemd").
        Delegate = true;

        RuntimeDirectory = mkIf inRun (removePrefix "/run/" cfg.runtimeDir);
        # What the supervisor makes it at start anyway (with the socket group as its
        # group): the group's members enter it, nobody else does.
        RuntimeDirectoryMode = "0750";
        StateDirectory = mkIf inVarLib (removePrefix "/var/lib/" cfg.stateDir);
        StateDirectoryMode = "0750";
        # The runtime directory and every socket are given to the socket group by their
        # owner, root, without CAP_CHOWN: so the supervisor, and the services it starts
        # as root, are members of it.
        SupplementaryGroups = mkIf (cfg.group != null) [ cfg.group ];

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
        ProtectHome = if readsUnderHome then "read-only" else true;
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
