# checks.tests: the README's test command, `cargo test --workspace`, on the repository's
# sources and the package's vendored dependencies, in the build sandbox. The sandbox runs
# as an unprivileged build user, so the tests that need root (dropping privileges,
# cgroups, the socket group) print SKIPPED, as they do for any non-root run; so do the
# Nix evaluations of crates/supervisor/tests/nix.rs (no nix-instantiate in the sandbox).
{
  lib,
  stdenv,
  rustPlatform,
  cargo,
  rustc,
  perl,
  protobuf,
  strata,
}:
stdenv.mkDerivation {
  pname = "strata-tests";
  inherit (strata) version cargoDeps;

  # The package's sources leave out the Nix files (so that editing the module does not
  # rebuild it); the tests read them (crates/supervisor/tests/nix.rs, nix_package.rs), so
  # here they stay. Only build outputs are left out.
  src = lib.cleanSourceWith {
    name = "strata-test-source";
    src = lib.cleanSource ../.;
    filter = path: type: !(type == "directory" && lib.hasPrefix "target" (baseNameOf path));
  };

  # The same build-time tools as the package (nix_package.rs checks both lists), plus
  # perl: the tests' notify-readiness scripts send READY=1 with it.
  nativeBuildInputs = [
    rustPlatform.cargoSetupHook
    cargo
    rustc
    protobuf
    perl
  ];

  buildPhase = ''
    runHook preBuild
    export HOME=$TMPDIR
    cargo test --workspace --frozen
    runHook postBuild
  '';

  installPhase = ''
    touch $out
  '';
}
