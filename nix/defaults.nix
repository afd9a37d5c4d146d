# The defaults of `services.strata` (nix/module.nix) that decide what the supervisor's
# manifest says, as plain values. The module takes its defaults from here, and
# crates/supervisor/tests/nix.rs renders them with nix/render-manifest.nix and compares
# the result with nix/golden/manifest.toml. Change one, regenerate the other:
#
#   nix-instantiate --store dummy:// --eval --strict --json -E \
#     'import ./nix/render-manifest.nix { settings = import ./nix/defaults.nix; }' \
#     | jq -j . > nix/golden/manifest.toml
{
  nodeId = "local-0";
  runtimeDir = "/run/strata";
  stateDir = "/var/lib/strata";

  # The `[supervisor]` table.
  supervisor = { };

  # Strata's own services, as the supervisor runs them without a manifest: bare names are
  # found beside strata-supervisor, in the same package.
  services = {
    registry = {
      exec = "strata-registry";
    };
    identity = {
      exec = "strata-identity";
    };
    fs = {
      exec = "strata-fs";
      depends_on = [ "identity" ];
    };
  };

  # No policy: only root (and identity's own uid) may obtain capabilities.
  issuancePolicy = null;

  # None: fs exports `<stateDir>/export`, which it creates.
  fs.exportRoots = [ ];

  # A single node: no etcd, no TLS, no TCP listener. The prefix and lease TTL are the
  # supervisor's own defaults, and only given to it in cluster mode.
  cluster = {
    etcd = {
      endpoints = [ ];
      caFile = null;
      certFile = null;
      keyFile = null;
      user = null;
      passwordFile = null;
    };
    prefix = "/strata";
    leaseTtl = 10;
    maxStaleness = "30s";
    maxClockSkew = "5s";
    tls = {
      caFile = null;
      certFile = null;
      keyFile = null;
    };
    fsListen = null;
  };
}
