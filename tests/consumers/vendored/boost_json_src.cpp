// Boost.JSON header-only: its src.hpp compiled into exactly one translation
// unit of the program, in place of -lboost_json.
#include <boost/json/src.hpp>
