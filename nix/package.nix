# The `strata` package: every binary of the workspace (strata-supervisor, -registry,
# -identity, -fs, -ctl, -bench), built from Cargo.lock with nixpkgs' Rust tooling. The
# test suite runs in its own check (./tests.nix).
{
  lib,
  rustPlatform,
}:
let
  workspace = (lib.importTOML ../Cargo.toml).workspace.package;
in
rustPlatform.buildRustPackage {
  pname = "strata";
  inherit (workspace) version;

  # The repository without build outputs and without the Nix files, so that editing the
  # module does not rebuild the package. nix/golden stays: a test reads it.
  src = lib.cleanSourceWith {
    name = "strata-source";
    src = lib.cleanSource ../.;
    filter =
      path: type:
      let
        base = baseNameOf path;
      in
      !(type == "directory" && lib.hasPrefix "target" base)
      && !(lib.hasSuffix ".nix" base || base == "flake.lock");
  };

  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "--workspace" ];

  # strata-testkit runs workspace binaries from the test's own target directory, which
  # buildRustPackage's check phase (an explicit --target) does not build into; the
  # tests run as `cargo test` in checks.tests instead.
  doCheck = false;

  meta = {
    description = "Capability-oriented service runtime for Linux";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
    mainProgram = "strata-supervisor";
  };
}
