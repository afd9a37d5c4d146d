# The README's tour (the block between `<!-- tour:start -->` and `<!-- tour:end -->`) as
# steps for the VM test (nix/vm-test.nix). Builtins only, so crates/supervisor/tests/nix.rs
# checks it against README.md without nixpkgs.
#
# Each non-empty line outside the ``` fences is one step:
#   { command; assign; expectFailure; }
# `NAME=$(command)` lines set `assign = "NAME"` (later steps get NAME in their
# environment), and a trailing `# fails` sets `expectFailure`.
readme:
let
  inherit (builtins)
    elemAt
    filter
    head
    isString
    length
    map
    match
    split
    ;
  cut =
    marker: text:
    let
      parts = split marker text;
    in
    if length parts == 3 then
      parts
    else
      throw "readme-tour.nix: README.md must contain `${marker}` exactly once";
  block = elemAt (cut "<!-- tour:end -->" (elemAt (cut "<!-- tour:start -->" readme) 2)) 0;
  lines = filter (
    l: isString l && match "[[:space:]]*" l == null && match "[[:space:]]*```.*" l == null
  ) (split "\n" block);
  step =
    line:
    let
      failing = match "(.*[^ ]) +# fails[[:space:]]*" line;
      command = if failing == null then line else head failing;
      assignment = match "([A-Za-z_][A-Za-z0-9_]*)=\\$\\((.*)\\)" command;
    in
    {
      expectFailure = failing != null;
      assign = if assignment == null then null else elemAt assignment 0;
      command = if assignment == null then command else elemAt assignment 1;
    };
in
map step lines
