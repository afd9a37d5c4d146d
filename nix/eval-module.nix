# nix/module.nix evaluated by the real NixOS module system (`lib.evalModules` from
# nixpkgs' `lib`), without the rest of nixpkgs: crates/supervisor/tests/nix.rs runs it with
# `nix-instantiate --eval --strict --json` and checks the result.
#
#   import ./nix/eval-module.nix { lib = import <nixpkgs-lib>/lib; settings = { ... }; }
#
# What NixOS would supply is declared here, as small as the module needs and no looser:
# the options it sets outside `services.strata` (with the types NixOS gives them, so a
# misspelt or mistyped setting fails here as it would on a NixOS machine), and stand-ins
# for the packages and builders it uses (each a fake store path named after it; the text
# a builder was given is kept beside it). `settings` is `services.strata`; `extraConfig`
# is any other configuration (e.g. a user in the socket group).
{
  lib,
  settings,
  extraConfig ? { },
}:
let
  inherit (lib) mkOption types;

  storePath = name: "/nix/store/00000000000000000000000000000000-${name}";
  package = name: {
    type = "derivation";
    inherit name;
    outPath = storePath name;
  };
  # A derivation stand-in that keeps what it was built from, so the test can read it.
  built = name: attrs: package name // attrs;

  pkgs = {
    coreutils = package "coreutils";
    writeText = name: text: built name { inherit text; };
    runCommand =
      name: env: script:
      built name {
        inherit script;
        nativeBuildInputs = env.nativeBuildInputs or [ ];
      };
    callPackage = _: _: throw "eval-module.nix: set services.strata.package";
    # nixpkgs' pkgs.formats.toml { } type: TOML values, nested.
    formats.toml =
      _:
      let
        atom = types.oneOf [
          types.bool
          types.int
          types.float
          types.str
          types.path
        ];
        value =
          types.nullOr (
            types.oneOf [
              atom
              (types.listOf value)
              (types.attrsOf value)
            ]
          )
          // {
            description = "TOML value";
          };
      in
      {
        type = value;
      };
  };

  # systemd's unit settings: an atom or a list of them (NixOS' `unitOption`).
  unitAtom = types.oneOf [
    types.bool
    types.int
    types.str
    types.path
    types.package
  ];
  unitOption = types.either unitAtom (types.listOf unitAtom);

  # The options nix/module.nix sets beyond its own, as NixOS declares them.
  nixos = {
    options = {
      assertions = mkOption {
        type = types.listOf (
          types.submodule {
            options = {
              assertion = mkOption { type = types.bool; };
              message = mkOption { type = types.str; };
            };
          }
        );
        default = [ ];
      };
      warnings = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      environment = {
        systemPackages = mkOption {
          type = types.listOf types.package;
          default = [ ];
        };
        variables = mkOption {
          type = types.attrsOf (types.either types.str (types.listOf types.str));
          default = { };
        };
        etc = mkOption {
          type = types.attrsOf (
            types.submodule {
              options.source = mkOption { type = types.path; };
            }
          );
          default = { };
        };
      };
      networking.firewall.allowedTCPPorts = mkOption {
        type = types.listOf types.port;
        default = [ ];
      };
      users = {
        groups = mkOption {
          type = types.attrsOf (
            types.submodule (
              { name, ... }:
              {
                options = {
                  name = mkOption {
                    type = types.str;
                    default = name;
                  };
                  gid = mkOption {
                    type = types.nullOr types.int;
                    default = null;
                  };
                  members = mkOption {
                    type = types.listOf types.str;
                    default = [ ];
                  };
                };
              }
            )
          );
          default = { };
        };
        users = mkOption {
          type = types.attrsOf (
            types.submodule {
              options = {
                isNormalUser = mkOption {
                  type = types.bool;
                  default = false;
                };
                uid = mkOption {
                  type = types.nullOr types.int;
                  default = null;
                };
                extraGroups = mkOption {
                  type = types.listOf types.str;
                  default = [ ];
                };
              };
            }
          );
          default = { };
        };
      };
      systemd = {
        tmpfiles.rules = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        services = mkOption {
          type = types.attrsOf (
            types.submodule {
              options = {
                description = mkOption {
                  type = types.str;
                  default = "";
                };
                wantedBy = mkOption {
                  type = types.listOf types.str;
                  default = [ ];
                };
                after = mkOption {
                  type = types.listOf types.str;
                  default = [ ];
                };
                wants = mkOption {
                  type = types.listOf types.str;
                  default = [ ];
                };
                reloadTriggers = mkOption {
                  type = types.listOf unitOption;
                  default = [ ];
                };
                environment = mkOption {
                  type = types.attrsOf (
                    types.nullOr (
                      types.oneOf [
                        types.str
                        types.path
                        types.package
                      ]
                    )
                  );
                  default = { };
                };
                serviceConfig = mkOption {
                  type = types.attrsOf unitOption;
                  default = { };
                };
              };
            }
          );
          default = { };
        };
      };
    };
  };

  evaluated = lib.evalModules {
    modules = [
      nixos
      ./module.nix
      {
        _module.args.pkgs = pkgs;
        services.strata = {
          package = package "strata";
        }
        // settings;
      }
      extraConfig
    ];
  };
  config = evaluated.config;
  manifest = config.environment.etc."strata/manifest.toml".source;
in
{
  unit = config.systemd.services.strata;
  groups = config.users.groups;
  users = config.users.users;
  tmpfiles = config.systemd.tmpfiles.rules;
  etc = builtins.attrNames config.environment.etc;
  # The rendered text when checkManifest is off; with it on, the build step that checks it.
  manifest = {
    inherit (manifest) name;
    script = manifest.script or null;
    text = manifest.text or null;
    checkedWith = map (p: p.name) (manifest.nativeBuildInputs or [ ]);
  };
  variables = config.environment.variables;
  firewall = config.networking.firewall.allowedTCPPorts;
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
  inherit (config) warnings;
}
