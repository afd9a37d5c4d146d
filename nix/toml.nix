# TOML from Nix values, with builtins only (no nixpkgs), so that what the module renders
# can be checked on a machine with nothing but `nix-instantiate` (crates/supervisor/tests/nix.rs).
#
#   (import ./toml.nix { firstKeys = [ "name" ]; }) { service = [ { name = "a"; } ]; }
#
# Non-empty attribute sets become tables, non-empty lists of them arrays of tables, and
# everything else `key = value` lines: empty sets and lists of anything else are inline.
# Null values are left out (TOML has no null). Keys are sorted, except that `firstKeys`
# present in a table come first, in that order. Paths and derivations become strings.
{
  firstKeys ? [ ],
}:
let
  inherit (builtins)
    all
    attrNames
    concatLists
    concatStringsSep
    elem
    filter
    fromJSON
    genList
    isAttrs
    isBool
    isFloat
    isInt
    isList
    isPath
    isString
    map
    match
    replaceStrings
    substring
    toJSON
    typeOf
    ;

  hex = n: substring n 1 "0123456789ABCDEF";
  unicodeEscape = n: "\\u00" + hex (n / 16) + hex (n - n / 16 * 16);
  # Control characters must be escaped; Nix strings cannot hold NUL.
  controlCodes = genList (n: n + 1) 31 ++ [ 127 ];
  shortEscapes = {
    "8" = "\\b";
    "9" = "\\t";
    "10" = "\\n";
    "12" = "\\f";
    "13" = "\\r";
  };
  escapeFrom = [
    "\\"
    "\""
  ] ++ map (n: fromJSON "\"${unicodeEscape n}\"") controlCodes;
  escapeTo = [
    "\\\\"
    "\\\""
  ] ++ map (n: shortEscapes.${toString n} or (unicodeEscape n)) controlCodes;
  quote = s: "\"" + replaceStrings escapeFrom escapeTo s + "\"";

  key = k: if match "[A-Za-z0-9_-]+" k != null then k else quote k;
  dotted = ks: concatStringsSep "." (map key ks);

  isDerivationLike = v: isAttrs v && v ? outPath;
  isTable = v: isAttrs v && !isDerivationLike v && v != { };
  isTableArray = v: isList v && v != [ ] && all isTable v;

  ordered =
    a:
    let
      present = filter (k: a.${k} != null) (attrNames a);
    in
    filter (k: elem k present) firstKeys ++ filter (k: !elem k firstKeys) present;

  float =
    f:
    let
      s = toJSON f;
    in
    if match "-?[0-9]+" s != null then s + ".0" else s;

  value =
    v:
    if isBool v then
      (if v then "true" else "false")
    else if isInt v then
      toString v
    else if isFloat v then
      float v
    else if isString v then
      quote v
    else if isPath v || isDerivationLike v then
      quote (toString v)
    else if isList v then
      "[" + concatStringsSep ", " (map value (filter (x: x != null) v)) + "]"
    else if isAttrs v then
      (
        if v == { } then
          "{}"
        else
          "{ " + concatStringsSep ", " (map (k: "${key k} = ${value v.${k}}") (ordered v)) + " }"
      )
    else
      throw "toml.nix: cannot render a ${typeOf v} as TOML";

  # The blocks (groups of lines) of the table `a` at key path `at`: its own header and
  # `key = value` lines, then its sub-tables and arrays of tables. `element` says `a` is
  # one element of an array of tables, whose header must always be written.
  blocks =
    element: at: a:
    let
      ks = ordered a;
      simple = filter (k: !isTable a.${k} && !isTableArray a.${k}) ks;
      tables = filter (k: isTable a.${k}) ks;
      arrays = filter (k: isTableArray a.${k}) ks;
      body = map (k: "${key k} = ${value a.${k}}") simple;
      header =
        if element then
          [ "[[${dotted at}]]" ]
        else if at == [ ] || (body == [ ] && tables ++ arrays != [ ]) then
          [ ]
        else
          [ "[${dotted at}]" ];
      own = header ++ body;
    in
    (if own == [ ] then [ ] else [ (concatStringsSep "\n" own) ])
    ++ concatLists (map (k: blocks false (at ++ [ k ]) a.${k}) tables)
    ++ concatLists (map (k: concatLists (map (blocks true (at ++ [ k ])) a.${k})) arrays);
in
document:
if isAttrs document && !isDerivationLike document then
  concatStringsSep "\n\n" (blocks false [ ] document) + "\n"
else
  throw "toml.nix: a TOML document is an attribute set, not a ${typeOf document}"
