# checks.tests: the README's test command, `cargo test --workspace`, on the package's
# sources and vendored dependencies, in the build sandbox. The sandbox runs as an
# unprivileged build user, so the tests that need root (dropping privileges, cgroups)
# print SKIPPED, as they do for any non-root run; the Nix tests of
# crates/supervisor/tests/nix.rs skip too (no nix-instantiate in the sandbox).
{
  stdenv,
  rustPlatform,
  cargo,
  rustc,
  perl,
  strata,
}:
stdenv.mkDerivation {
  pname = "strata-tests";
  inherit (strata) version src cargoDeps;

  # perl: the tests' notify-readiness scripts send READY=1 with it.
  nativeBuildInputs = [
    rustPlatform.cargoSetupHook
    cargo
    rustc
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
