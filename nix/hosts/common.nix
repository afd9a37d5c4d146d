# What both images share: a Strata node on the defaults, strata-ctl on PATH.
{
  services.strata.enable = true;

  users.motd = ''
    This machine runs a Strata node (systemctl status strata). As root, try:
      strata-ctl status
      strata-ctl svc list
  '';

  system.stateVersion = "26.05";
}
