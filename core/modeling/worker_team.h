// Cheaper fork and join for the kernels of a decode step (core-internal).
#pragma once

#include <cstdint>
#include <functional>

namespace plugformer {

// The cores this process may run on (its affinity mask).
int64_t usable_cores();

// Runs main on the calling thread inside one OpenMP parallel region whose other threads wait,
// spinning, for the pieces of the team_parallel_for calls main makes. A decode step makes ~100
// calls of 20-50 us (products, attention); a region of their own costs ~3.4 us each on a 2-vCPU
// VM, a piece handed to a spinning thread ~0.6 us. libtorch's own ops inside main run on the
// calling thread alone (at::parallel_for inside a region does not fork): for short inputs only.
// Runs main directly with one thread, inside a parallel region, or inside another team. With more
// threads than usable cores the waiting threads yield their core at every poll. When other work
// holds up the team's threads (two steps in a row waiting for them over a quarter of the time),
// the next steps, and the products right after each, run on the calling thread alone; then the
// team is tried again (worker_team.cpp).
void with_worker_team(const std::function<void()>& main);

// body(begin, end) over [0, n) split as at::parallel_for(0, n, grain, body) splits it: a piece
// for each of at most at::get_num_threads() threads, or all inline when n <= grain (or when the
// team runs alone, above). Called from the main of with_worker_team, the pieces go to its team;
// elsewhere this is at::parallel_for.
using TeamBody = void (*)(const void* context, int64_t begin, int64_t end);
void team_parallel_for(int64_t n, int64_t grain, TeamBody body, const void* context);

// A weight's rows as a decode product streams them: cut into `lanes` equal parts, each cut into
// threads x streams_per_thread equal streams, thread t reading streams t * streams_per_thread
// onwards of every lane.
struct RowStreams {
  const void* data = nullptr;
  int64_t rows = 0, row_bytes = 0, threads = 0, streams_per_thread = 0, lanes = 1;
};
// Called by main between team_parallel_for calls, with the product it is going to start: while
// main runs the ops in between alone, each other thread of its team asks for the beginnings of its
// own streams (up to bytes_per_thread in all), leaving them for any piece main hands out and
// going on after it, until main announces other rows (none: an empty RowStreams). Memory would
// otherwise sit idle then. Outside a team, or with more threads than cores: nothing.
void team_read_ahead(const RowStreams& next, int64_t bytes_per_thread);

template <class F>
void team_parallel_for(int64_t n, int64_t grain, const F& f) {
  team_parallel_for(
      n, grain, [](const void* context, int64_t begin, int64_t end) { (*static_cast<const F*>(context))(begin, end); }, &f);
}

}  // namespace plugformer
