# shellcheck shell=bash
# Kaldi-style option parsing; source it after declaring the options:   . utils/parse_options.sh
#
#   --name value  and  --name=value  set the shell variable `name` (dashes in the name become underscores)
#   an option is accepted only if the calling script declared it:
#     - between the lines "# begin options" and "# end options" when the script has that block
#       (one `name=default  # help` per line), else
#     - as any shell variable already set (the original Kaldi rule)
#   an option whose default is true or false takes only true or false
#   --help / -h prints `help_message` (if set) and every declared option with its default and help, then exits 0
#   parsing stops at the first argument that is not an option; the rest stay in "$@"
#
# An undeclared option, a missing value or a wrong boolean is a one-line error (exit 1).

__po_script=${BASH_SOURCE[1]:-$0}
__po_names=()
__po_help=()
if grep -q '^# begin options' "$__po_script" 2>/dev/null; then
  while IFS= read -r __po_line; do
    if [[ $__po_line =~ ^([A-Za-z_][A-Za-z0-9_]*)= ]]; then
      __po_names+=("${BASH_REMATCH[1]}")
      if [[ $__po_line =~ \#[[:space:]]*(.*)$ ]]; then __po_help+=("${BASH_REMATCH[1]}"); else __po_help+=(""); fi
    fi
  done < <(sed -n '/^# begin options/,/^# end options/p' "$__po_script")
fi

__po_declared() {
  local n
  if [ ${#__po_names[@]} -gt 0 ]; then
    for n in "${__po_names[@]}"; do [ "$n" = "$1" ] && return 0; done
    return 1
  fi
  [ -n "${!1+set}" ]
}

__po_usage() {
  local i n width=0
  [ -n "${help_message:-}" ] && echo "$help_message"
  if [ ${#__po_names[@]} -eq 0 ]; then return 0; fi
  echo "Options (default in brackets):"
  for n in "${__po_names[@]}"; do [ ${#n} -gt "$width" ] && width=${#n}; done
  for i in "${!__po_names[@]}"; do
    n=${__po_names[$i]}
    printf "  --%-${width}s  %s [%s]\n" "$n" "${__po_help[$i]}" "${!n}"
  done
}

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) __po_usage; exit 0 ;;
    --*=*) __po_name=${1%%=*}; __po_value=${1#*=}; shift ;;
    --*)
      __po_name=$1
      if [ $# -lt 2 ]; then echo "$(basename "$__po_script"): option $1 needs a value; pass $1 VALUE" >&2; exit 1; fi
      __po_value=$2; shift 2 ;;
    *) break ;;
  esac
  __po_name=${__po_name#--}
  __po_name=${__po_name//-/_}
  if ! [[ $__po_name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || ! __po_declared "$__po_name"; then
    echo "$(basename "$__po_script"): unknown option --$__po_name; see $(basename "$__po_script") --help for the valid options" >&2
    exit 1
  fi
  case "${!__po_name}" in
    true|false)
      if [ "$__po_value" != true ] && [ "$__po_value" != false ]; then
        echo "$(basename "$__po_script"): option --$__po_name takes true or false, got '$__po_value'" >&2
        exit 1
      fi ;;
  esac
  printf -v "$__po_name" '%s' "$__po_value"
done
unset -f __po_declared __po_usage
unset __po_script __po_names __po_help __po_line __po_name __po_value
true
