# The `strata` package: every binary of the workspace (strata-supervisor, -registry,
# -identity, -fs, -ctl, -bench), built from Cargo.lock with nixpkgs' Rust tooling, with
# strata-ctl's man pages and shell completions. The test suite runs in its own check
# (./tests.nix).
#
# Build-time tools: what a build script of the dependency graph runs goes in
# nativeBuildInputs, here and in ./tests.nix. crates/supervisor/tests/nix_package.rs keeps
# the list honest: it finds every crate with a build script (`cargo metadata`) and fails
# when one needs a tool that is missing here.
{
  lib,
  stdenv,
  rustPlatform,
  protobuf,
  installShellFiles,
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

  nativeBuildInputs = [
    # protoc: etcd-client's build script generates its gRPC code with it (tonic-build,
    # prost-build), for strata-cluster.
    protobuf
    installShellFiles
  ];

  # strata-ctl writes its own man pages (strata-ctl.1 and one per subcommand) and
  # completion scripts; running it needs a build machine that can execute the result.
  postInstall = lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
    installShellCompletion --cmd strata-ctl \
      --bash <($out/bin/strata-ctl completions bash) \
      --zsh <($out/bin/strata-ctl completions zsh) \
      --fish <($out/bin/strata-ctl completions fish)
    mkdir -p man
    $out/bin/strata-ctl man --out-dir man
    installManPage man/*.1
  '';

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
