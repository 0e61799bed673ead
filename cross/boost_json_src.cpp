// Boost.JSON compiled from its sources, for builds with no Boost.JSON
// library for the target (the cross builds of scripts/cross): meson.build
// links this into every program when -Dboost_json_source=true.
#include <boost/json/src.hpp>
