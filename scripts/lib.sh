# shellcheck shell=bash
# What the scripts share: logging, Debian packages, the stack's environment, PostgreSQL URLs.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"     (from a script in scripts/; .ci/run sources scripts/lib.sh)
#
# Sourced, never executed: sourcing it only defines functions. The functions read these variables of the script
# that sources it, when set:
#   LOG_TAG     the [tag] of log and die lines (default: the script's file name)
#   LOG_ERROR   the word before a die message (default ERROR)
#   APT_UPDATED 1 once install_pkgs ran `apt-get update` (set by install_pkgs itself)

# log MESSAGE...: one line on stderr, "[tag] message".
log() { printf '[%s] %s\n' "${LOG_TAG:-${0##*/}}" "$*" >&2; }

# die MESSAGE...: "[tag] ERROR: message" on stderr, then exit 1.
die() {
  printf '[%s] %s: %s\n' "${LOG_TAG:-${0##*/}}" "${LOG_ERROR:-ERROR}" "$*" >&2
  exit 1
}

# ensure_tool CMD PKG: install Debian package PKG when command CMD is missing.
ensure_tool() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  install_pkgs "$pkg"
}

# install_pkgs PKG...: apt-get install, through `sudo -n` when not root. `apt-get update` runs only when apt has
# no candidate for a package (once per script run), so a machine with fresh lists does not pay for it. apt's
# output goes to stderr: the scripts' stdout is for what callers capture (export lines, paths).
install_pkgs() {
  local sudo=() pkg
  if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install $*"
    sudo=(sudo -n)
  fi
  for pkg in "$@"; do
    if ((${APT_UPDATED:-0} == 0)) && ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [^(]'; then
      log "apt has no candidate for $pkg yet: running apt-get update"
      "${sudo[@]}" apt-get update -q >&2
      APT_UPDATED=1
    fi
  done
  log "installing: $*"
  # Never wait on a prompt (CI has no stdin); `env` because sudo drops the caller's environment.
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}

# stack_env: capture `scripts/stack env`, then eval it, and keep the export lines in STACK_ENV. Capture first:
# `eval "$(scripts/stack env)"` would hide a failure of `scripts/stack env` (eval of an empty string succeeds).
# Returns the failure's exit code, with set -e or without.
stack_env() {
  local rc=0
  STACK_ENV=$("${BASH_SOURCE[0]%/*}/stack" env) || rc=$?
  if ((rc != 0)); then
    printf 'scripts/stack env failed (exit %s)\n' "$rc" >&2
    return "$rc"
  fi
  eval "$STACK_ENV"
}

# stack_up_env: start (or reuse) the stack with `scripts/stack up`, then stack_env.
stack_up_env() {
  "${BASH_SOURCE[0]%/*}/stack" up || return
  stack_env
}

# parse_pg_url URL: split postgres[ql]://[USER[:PASS]@][HOST][:PORT][/DB][?QUERY] into PG_USER PG_PASS PG_HOST
# PG_PORT PG_DB (empty when absent: the caller picks the defaults), and for rebuilding it PG_SCHEME, PG_USERINFO
# ("USER[:PASS]@" as written, or empty) and PG_REST (what follows the database name: the query). Returns 1 when URL
# is not such a URL. As in libpq, the user information ends at the first '/'. Percent-encoded characters are not
# decoded: keep role names and passwords plain.
# shellcheck disable=SC2034 # the PG_* variables are read by the scripts that source this file
parse_pg_url() {
  local url=$1 re='^postgres(ql)?://(([^:@/]+)(:([^@/]*))?@)?([^:/?]+)?(:([0-9]+))?(/([^?]*))?'
  [[ $url =~ $re ]] || return 1
  PG_SCHEME=postgres${BASH_REMATCH[1]}
  PG_USERINFO=${BASH_REMATCH[2]}
  PG_USER=${BASH_REMATCH[3]}
  PG_PASS=${BASH_REMATCH[5]}
  PG_HOST=${BASH_REMATCH[6]}
  PG_PORT=${BASH_REMATCH[8]}
  PG_DB=${BASH_REMATCH[10]}
  PG_REST=${url:${#BASH_REMATCH[0]}}
}

# pg_url_with URL HOST:PORT DB: URL with another address and/or database (an empty argument keeps URL's own, as
# written), everything else (user, password, query, fragment) as it was. Returns 1 when URL does not parse
# (parse_pg_url).
pg_url_with() {
  local addr=$2 db=$3 rest tail path
  parse_pg_url "$1" || return 1
  rest=${1#*://}
  rest=${rest#"$PG_USERINFO"}
  # The address ends where the path or the query begins; the path where the query or the fragment does.
  tail=${rest#"${rest%%[/?]*}"}
  addr=${addr:-${rest%%[/?]*}}
  path=
  [[ $tail == /* ]] && path=${tail%%[?#]*}
  printf '%s://%s%s/%s%s' "$PG_SCHEME" "$PG_USERINFO" "$addr" "${db:-${path#/}}" "${tail#"$path"}"
}
