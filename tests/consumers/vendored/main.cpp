// Copy-paste vendoring: run.sh copies only atomic_state.hpp into an empty
// folder and builds this with -I<folder>, three ways: linked to
// -lboost_json; with boost_json_src.cpp (Boost.JSON header-only) and no
// link flag; and with -DATOMIC_STATE_NO_JSON and no Boost at all.
#include "../common/roundtrip.hpp"

int main(int argc, char** argv) { return consumer::run(argc, argv, "vendored"); }
