{
  description = "Strata: a capability-oriented service runtime for Linux";

  # Rust 1.90 or newer (the workspace's rust-version).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});

      # A NixOS machine on x86_64 with Strata enabled (nix/hosts/common.nix).
      node =
        host:
        lib.nixosSystem {
          modules = [
            { nixpkgs.hostPlatform = "x86_64-linux"; }
            self.nixosModules.strata
            host
          ];
        };
    in
    {
      packages = forAllSystems (
        system: pkgs:
        {
          strata = pkgs.callPackage ./nix/package.nix { };
          default = self.packages.${system}.strata;
        }
        // lib.optionalAttrs (system == "x86_64-linux") {
          iso = self.nixosConfigurations.strata-iso.config.system.build.isoImage;
          vm = self.nixosConfigurations.strata-vm.config.system.build.vm;
        }
      );

      apps.x86_64-linux.vm = {
        type = "app";
        program = "${self.packages.x86_64-linux.vm}/bin/run-strata-vm-vm";
        meta.description = "Start a QEMU VM running a Strata node";
      };

      checks = forAllSystems (
        system: pkgs:
        let
          strata = self.packages.${system}.strata;
        in
        {
          package = strata;
          tests = pkgs.callPackage ./nix/tests.nix { inherit strata; };
          fmt = pkgs.runCommand "strata-fmt" {
            nativeBuildInputs = [
              pkgs.cargo
              pkgs.rustfmt
            ];
          } ''
            export HOME=$TMPDIR
            cp -r ${strata.src} source && chmod -R u+w source && cd source
            cargo fmt --all -- --check
            touch $out
          '';
          vm = import ./nix/vm-test.nix {
            inherit pkgs;
            module = self.nixosModules.strata;
          };
        }
      );

      devShells = forAllSystems (
        system: pkgs: {
          default = pkgs.mkShell {
            packages = with pkgs; [
              cargo
              rustc
              rustfmt
              clippy
              rust-analyzer
              etcd
              protobuf
              perl
              nixfmt
            ];
          };
        }
      );

      formatter = forAllSystems (system: pkgs: pkgs.nixfmt);

      nixosModules = {
        strata = import ./nix/module.nix;
        default = self.nixosModules.strata;
      };

      overlays.default = final: prev: { strata = final.callPackage ./nix/package.nix { }; };

      nixosConfigurations = {
        strata-vm = node ./nix/hosts/vm.nix;
        strata-iso = node ./nix/hosts/iso.nix;
      };
    };
}
