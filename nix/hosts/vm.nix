# nixosConfigurations.strata-vm: a QEMU VM with Strata enabled, root logged in on the
# serial console. Build and start: `nix run .#vm` (or `nix build .#vm` and run
# result/bin/run-strata-vm-vm).
{ modulesPath, ... }:
{
  imports = [
    "${modulesPath}/virtualisation/qemu-vm.nix"
    ./common.nix
  ];

  networking.hostName = "strata-vm";
  services.getty.autologinUser = "root";
  virtualisation = {
    memorySize = 1024;
    graphics = false;
  };
}
