# The supervisor's TOML manifest, rendered from `services.strata`'s settings. Builtins
# only (no nixpkgs), so crates/supervisor/tests/nix.rs can evaluate it on a machine with
# nothing but `nix-instantiate` and compare it with nix/golden/manifest.toml.
#
# `settings` has the shape of `config.services.strata` (nix/defaults.nix is one):
# `supervisor`, `services`, `fs.exportRoots` and `cluster.fsListen` are read. Each service is
# a `[[service]]` named after its attribute, with the manifest's own keys
# (crates/supervisor/README.md); `enable = false` leaves it out. Strata's own services
# come first, in the built-in graph's order (registry, identity, fs: the order the
# supervisor starts independent services in, and the reverse of the order it stops them
# in), then the others by name. `issuancePolicyFile` is the rendered issuance policy's
# path, or null.
#
# Strata's services get a clean environment from the supervisor, so the settings meant
# for one of them travel in that service's `env`: the issuance policy to `identity`
# (STRATA_ISSUANCE_POLICY) and the export roots to `fs` (STRATA_FS_EXPORT_ROOTS, colon-
# separated). A service's own `env` wins over these. The cluster settings are not here:
# they are the supervisor's (STRATA_ETCD_ENDPOINTS, STRATA_TLS_*, ... in the unit's
# environment), which checks them and hands them to every service. Only fs's mutual-TLS
# listener is per service: `cluster.fsListen` becomes fs's `tcp` key (and wins over a
# `tcp` of `services.fs`; the module refuses both at once).
{
  settings,
  issuancePolicyFile ? null,
}:
let
  inherit (builtins)
    attrNames
    concatStringsSep
    elem
    filter
    map
    removeAttrs
    ;
  toTOML = import ./toml.nix {
    firstKeys = [
      "name"
      "exec"
    ];
  };

  optional = name: value: if value == null then { } else { ${name} = value; };

  exportRoots = settings.fs.exportRoots;
  generatedEnv = {
    identity = optional "STRATA_ISSUANCE_POLICY" issuancePolicyFile;
    fs =
      if exportRoots == [ ] then { } else { STRATA_FS_EXPORT_ROOTS = concatStringsSep ":" exportRoots; };
  };
  # Manifest keys set from options, over the service's own.
  generatedKeys = {
    fs = optional "tcp" (settings.cluster.fsListen or null);
  };

  service =
    name: spec:
    let
      env = (generatedEnv.${name} or { }) // (spec.env or { });
    in
    removeAttrs spec [
      "enable"
      "env"
      "capabilities"
    ]
    // (generatedKeys.${name} or { })
    # The module's `capabilities` are the manifest's `[[service.capability]]` (null keys
    # are left out by toml.nix).
    // (if (spec.capabilities or [ ]) == [ ] then { } else { capability = spec.capabilities; })
    // {
      inherit name;
    }
    // (if env == { } then { } else { inherit env; });

  builtinOrder = [
    "registry"
    "identity"
    "fs"
  ];
  names = attrNames settings.services;
  ordered = filter (n: elem n names) builtinOrder ++ filter (n: !elem n builtinOrder) names;
  enabled = filter (name: settings.services.${name}.enable or true) ordered;
  supervisor = settings.supervisor or { };
in
''
  # The Strata supervisor's manifest, rendered by nix/render-manifest.nix from the NixOS
  # option services.strata. Change the configuration, not this file.

''
+ toTOML (
  (if supervisor == { } then { } else { inherit supervisor; })
  // {
    service = map (name: service name settings.services.${name}) enabled;
  }
)
