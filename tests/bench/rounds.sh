# Sourced by the run-*.sh scripts.
# Paired rounds: odd rounds run the rows in the order given, even rounds in
# reverse, so drift on this box does not favour one side.
round_order() {
  local r=$1
  shift
  if [ $((r % 2)) = 0 ]; then printf '%s\n' "$@" | tac | tr '\n' ' '; else echo "$@"; fi
}
