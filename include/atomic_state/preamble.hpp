// preamble.hpp: the version, configuration macros, the platform check, the ABI namespace
//
// atomic_state.hpp - crash-safe file replacement and program state for C++17,
// in one header.
// Version 0.2.0 - https://github.com/atomic-state/atomic_state (SPDX: MIT)
//
// CONTENTS
//
// WHAT IT DOES
//   AtomicWriter replaces a file so that a crash, a power cut or a full disk
//   leaves either the old content or the new content, never a torn file:
//   temp file in the same directory (created 0600, O_EXCL, O_NOFOLLOW,
//   O_CLOEXEC, and locked so that a sweep of stale temp files leaves it
//   alone), write every byte, fchmod to the final mode, fsync, close, rename
//   over the target, fsync the directory. Any failure before the rename
//   removes the temp file and leaves the target byte-for-byte untouched. No
//   save ever waits for a lock: nothing another process holds can stop one.
//
//   StateManager remembers what a periodic job last processed in
//   <dir>/state.json (Boost.JSON), decides whether new data is worth
//   processing, and saves the next state through AtomicWriter. Every decision
//   is logged through a sink of the caller's choosing (see LogSink). A run
//   lock keeps runs from overlapping; a load says where its state came from
//   (saved, first run, recovered from a corrupt file, the previous state);
//   schemas carry versions and upgrades; cursors may be slots, not clocks.
//
// USAGE CONTRACT
//   - Copy this file anywhere and #include it. It needs C++17 and POSIX
//     (Linux, the BSDs, macOS).
//   - json.hpp, state.hpp and state_manager.hpp need Boost.JSON (1.81 or
//     later): either link it (-lboost_json), or compile Boost.JSON's own
//     source file (src.hpp, in its json directory) into exactly one .cpp
//     file of the program. This header never includes that file itself.
//     Define ATOMIC_STATE_NO_JSON to leave those three out; the rest then
//     needs nothing but the C++ library.
//   - Nothing here throws and nothing aborts on bad input: every operation
//     returns a Status (or a Result<T>) naming the step, the path, the
//     target and the OS reason, and running out of memory while describing a
//     failure costs its text, never the failure. What allocates a
//     std::string can throw std::bad_alloc as any std::string does: the
//     StateManager constructor, Status::message(), to_rfc3339(),
//     update_state(). Result::value() of a failure is a caller bug: it
//     aborts (see ATOMIC_STATE_ON_MISSING_VALUE).
//   - The target and its temp file live in the same directory, so the rename
//     never crosses a filesystem. A symlink at the target path is replaced by
//     the new file, not followed.
//   - Durability is chosen by the SyncPolicy: FullSync (default), DataSync,
//     NoSync (atomic against a process crash only, not a power loss).
//   - Every system call goes through the Fs policy (PosixFs by default), so
//     a test can fail any call it likes.
//
// CONFIGURATION (define before including; each has a sensible default)
//   ATOMIC_STATE_ON_MISSING_VALUE(st)  what Result::value() without a value
//                                      does before it aborts (prints st)
//   ATOMIC_STATE_EINTR_RETRY_LIMIT     retries of a call interrupted by a
//                                      signal or a write that made no
//                                      progress, before giving up (10000)
//   ATOMIC_STATE_TEMP_NAME_ATTEMPTS    temp names tried before giving up (100)
//   ATOMIC_STATE_PATH_MAX              longest path accepted, in bytes,
//                                      terminating NUL included (PATH_MAX)
//   ATOMIC_STATE_NAME_MAX              longest file name accepted (NAME_MAX)
//   ATOMIC_STATE_NO_JSON               leave out the JSON parts (no Boost)
//   ATOMIC_STATE_MAX_STATE_SIZE        default size limit of a state file,
//                                      in bytes (1 MiB); settable per manager
//   ATOMIC_STATE_JSON_MAX_DEPTH        deepest JSON nesting read or written
//                                      (32)
//
// LICENSE (MIT)
//   Copyright (c) 2026 The atomic_state authors
//
//   Permission is hereby granted, free of charge, to any person obtaining a
//   copy of this software and associated documentation files (the
//   "Software"), to deal in the Software without restriction, including
//   without limitation the rights to use, copy, modify, merge, publish,
//   distribute, sublicense, and/or sell copies of the Software, and to permit
//   persons to whom the Software is furnished to do so, subject to the
//   following conditions:
//
//   The above copyright notice and this permission notice shall be included
//   in all copies or substantial portions of the Software.
//
//   THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS
//   OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF
//   MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN
//   NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
//   DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
//   OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE
//   USE OR OTHER DEALINGS IN THE SOFTWARE.

// Two different copies of this header in one translation unit would otherwise
// be silently reduced to whichever came first by the include guard.
#if defined(ATOMIC_STATE_VERSION_MAJOR) &&                                 \
    (ATOMIC_STATE_VERSION_MAJOR != 0 || ATOMIC_STATE_VERSION_MINOR != 2 || \
     ATOMIC_STATE_VERSION_PATCH != 0)
#error "atomic_state.hpp: a different version of this header was already included"
#endif

// Below C++17 this #error is the only error: the guard then skips the rest.
#if __cplusplus < 201703L
#error "atomic_state.hpp needs C++17 or later (compile with -std=c++17)"
#define ATOMIC_STATE_HPP_INCLUDED
#endif

#ifndef ATOMIC_STATE_PREAMBLE_HPP
#define ATOMIC_STATE_PREAMBLE_HPP

#include <limits.h>  // NAME_MAX, PATH_MAX

// ================================================================ VERSION ====
#define ATOMIC_STATE_VERSION_MAJOR 0
#define ATOMIC_STATE_VERSION_MINOR 2
#define ATOMIC_STATE_VERSION_PATCH 0
#define ATOMIC_STATE_VERSION_STRING "0.2.0"
#define ATOMIC_STATE_VERSION                                               \
  (ATOMIC_STATE_VERSION_MAJOR * 10000 + ATOMIC_STATE_VERSION_MINOR * 100 + \
   ATOMIC_STATE_VERSION_PATCH)

// ========================================================== CONFIGURATION ====
#ifndef ATOMIC_STATE_EINTR_RETRY_LIMIT
#define ATOMIC_STATE_EINTR_RETRY_LIMIT 10000
#endif

#ifndef ATOMIC_STATE_TEMP_NAME_ATTEMPTS
#define ATOMIC_STATE_TEMP_NAME_ATTEMPTS 100
#endif

#ifndef ATOMIC_STATE_MAX_STATE_SIZE
#define ATOMIC_STATE_MAX_STATE_SIZE 1048576  // 1 MiB
#endif

#ifndef ATOMIC_STATE_JSON_MAX_DEPTH
#define ATOMIC_STATE_JSON_MAX_DEPTH 32
#endif

// try/catch that compile to nothing under -fno-exceptions. The caught
// exception is always named, so that the handler may read it; without
// exceptions the name refers to a default-constructed one, never reached.
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#define ATOMIC_STATE_DETAIL_TRY try
// A type and a name, not expressions: they cannot take parentheses.
// NOLINTNEXTLINE(bugprone-macro-parentheses)
#define ATOMIC_STATE_DETAIL_CATCH(type, name) catch (const type& name)
#define ATOMIC_STATE_DETAIL_CATCH_ALL catch (...)
#else
#define ATOMIC_STATE_DETAIL_TRY if (true)
#define ATOMIC_STATE_DETAIL_CATCH(type, name) \
  else if ([[maybe_unused]] const type& name = ::atomic_state::detail::no_exception<type>(); false)
#define ATOMIC_STATE_DETAIL_CATCH_ALL else
#endif

// The inline namespace carries the version, so two vendored copies of
// different versions linked into one program cannot violate the ODR.
#define ATOMIC_STATE_DETAIL_PASTE6(a, b, c, d, e, f) a##b##c##d##e##f
#define ATOMIC_STATE_DETAIL_ABI_NAME(ma, mi, pa) ATOMIC_STATE_DETAIL_PASTE6(v, ma, _, mi, _, pa)
#define ATOMIC_STATE_DETAIL_ABI                                                        \
  ATOMIC_STATE_DETAIL_ABI_NAME(ATOMIC_STATE_VERSION_MAJOR, ATOMIC_STATE_VERSION_MINOR, \
                               ATOMIC_STATE_VERSION_PATCH)

// =============================================================== PLATFORM ====
// All platform-specific code lives in this block and in PosixFs below.
#if defined(_WIN32)
#error \
    "atomic_state.hpp supports POSIX systems only (Linux, BSD, macOS); Windows is not supported yet"
#elif !(defined(__unix__) || defined(__unix) || defined(__APPLE__))
#error "atomic_state.hpp supports POSIX systems only (Linux, BSD, macOS); this platform is not one"
#endif

#ifndef ATOMIC_STATE_NAME_MAX
#ifdef NAME_MAX
#define ATOMIC_STATE_NAME_MAX NAME_MAX
#else
#define ATOMIC_STATE_NAME_MAX 255
#endif
#endif

#ifndef ATOMIC_STATE_PATH_MAX
#ifdef PATH_MAX
#define ATOMIC_STATE_PATH_MAX PATH_MAX
#else
#define ATOMIC_STATE_PATH_MAX 4096
#endif
#endif

namespace atomic_state {
inline namespace ATOMIC_STATE_DETAIL_ABI {

namespace detail {
// What ATOMIC_STATE_DETAIL_CATCH names when there are no exceptions.
template <class Exception>
const Exception& no_exception() noexcept {
  static const Exception none{};
  return none;
}
}  // namespace detail

}  // namespace ATOMIC_STATE_DETAIL_ABI
}  // namespace atomic_state

#endif  // ATOMIC_STATE_PREAMBLE_HPP
