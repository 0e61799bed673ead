// What each translation unit of the two-versions program says about the copy
// of atomic_state.hpp it was compiled with. Includes nothing of the library.
#ifndef ATOMIC_STATE_CONSUMER_REPORT_HPP
#define ATOMIC_STATE_CONSUMER_REPORT_HPP

struct TuReport {
  const char* version;      // its ATOMIC_STATE_VERSION_STRING
  const char* writer_type;  // typeid(AtomicWriter<>).name(): has the inline namespace
  int status;               // consumer::run: 0 when both roundtrips passed
};

TuReport old_tu(int argc, char** argv);
TuReport new_tu(int argc, char** argv);

#endif
