#!/usr/bin/env bash
# The extension's error rule (extension/pg_compat.hpp), checked in its source:
# C++ code never raises a Postgres ERROR itself, because elog/ereport(ERROR)
# longjmps over every C++ frame up to the nearest PG_TRY, skipping their
# destructors. It throws syncline::Error (Fail() for internal errors), which
# unwinds them and is raised at the SQL boundary.
#
# The only raises allowed are Postgres-style helpers that hold no C++ object
# and say so: a comment line "// raises: <why>" directly above the statement.
# Exits 1 and names each offending line otherwise.
set -uo pipefail
cd "$(dirname "$0")/../.."

bad=0
for file in extension/*.cpp extension/*.hpp; do
  [ "$file" = extension/pg_compat.hpp ] && continue  # states the rule; PG_RE_THROW in PgGuard
  while IFS=: read -r line _; do
    previous=$(sed -n "$((line - 1))p" "$file")
    if [[ "$previous" =~ ^[[:space:]]*//\ raises:\ . ]]; then continue; fi
    echo "$file:$line: raises a Postgres ERROR from C++ (throw syncline::Error or call Fail())"
    sed -n "${line}p" "$file"
    bad=1
  done < <(grep -nE '\b(elog|ereport)\((ERROR|FATAL|PANIC)\b|\bPG_RE_THROW\(\)|\bReThrowError\(' "$file")
done

# A catalog lookup or output function used as an operand of a C++ string
# concatenation runs while the left-hand temporaries are alive: if it raises,
# Postgres longjmps over their destructors. Fetch the name first (as palloc'd
# text) or through a guard (writes.cpp's TypeName), then build the string.
lookups='format_type_be|format_type_be_qualified|format_procedure|get_rel_name|get_attname|get_namespace_name|get_func_name|SPI_getvalue|text_to_cstring|TextDatumGetCString'
while IFS= read -r hit; do
  echo "$hit: a Postgres lookup inside a string concatenation (fetch it first)"
  bad=1
done < <(grep -nE "\+ *(std::string\()?($lookups)\(|($lookups)\([^()]*(\([^()]*\))*[^()]*\) *\+" \
  extension/*.cpp extension/*.hpp)

if [ "$bad" -ne 0 ]; then exit 1; fi
echo "error rules: no Postgres ERROR raised from C++ code outside the marked helpers," \
  "no Postgres lookup inside a string concatenation"
