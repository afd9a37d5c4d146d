# nixosConfigurations.strata-iso: a bootable installer ISO (nixpkgs' minimal installation
# CD) with Strata enabled. Build: `nix build .#iso`; the image is in result/iso/.
{ modulesPath, ... }:
{
  imports = [
    "${modulesPath}/installer/cd-dvd/installation-cd-minimal.nix"
    ./common.nix
  ];

  networking.hostName = "strata-iso";
}
