// What PostgreSQL's text and jsonb can hold, checked before a client's values reach them.
// Pure C++ (no libwebsockets, no libpq), so the unit tests link it.
#pragma once

#include <nlohmann/json.hpp>

namespace syncline::gateway {

// Whether any string or object key in `value` holds U+0000. PostgreSQL's text and jsonb
// cannot hold it, and libpq passes a text parameter cut at it: a value holding one either
// fails the whole statement or arrives as another value.
bool JsonHoldsNul(const nlohmann::json &value);

}  // namespace syncline::gateway
