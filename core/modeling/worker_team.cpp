#include "worker_team.h"

#include <ATen/Parallel.h>
#include <immintrin.h>
#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <thread>

namespace plugformer {

namespace {

// The caller (thread 0 of the region) runs piece 0 of every job, thread i piece i. Every thread
// takes part in every job (those without a piece only acknowledge it), so the job's description
// is never rewritten while a thread may still read it.
class Team {
 public:
  void start(int64_t threads) {
    threads_ = threads;
    crowded_ = threads > usable_cores();
  }

  void run(int64_t n, int64_t grain, TeamBody body, const void* context) {
    const int64_t used = std::min(threads_, (n + grain - 1) / grain);
    job_ = {body, context, n, (n + used - 1) / used};
    error_ = nullptr;
    pending_.store(threads_ - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    std::exception_ptr own;
    try {
      piece(0);
    } catch (...) {
      own = std::current_exception();
    }
    // The body and its context live on the caller's stack: wait for every thread even on error.
    while (pending_.load(std::memory_order_acquire) > 0) pause();
    if (own) std::rethrow_exception(own);
    if (error_) std::rethrow_exception(error_);
  }

  void finish() { finished_.store(true, std::memory_order_release); }

  void announce_read_ahead(const RowStreams& next, int64_t bytes_per_thread) {
    if (crowded_) return;
    std::lock_guard<std::mutex> lock(read_ahead_mutex_);
    read_ahead_ = next;
    read_ahead_bytes_ = bytes_per_thread;
    read_ahead_generation_.fetch_add(1, std::memory_order_release);
  }

  // Thread `index` of the region until finish(). After a millisecond without work (main busy
  // with something long), or always when crowded (computed by each thread itself: start() may
  // not have run yet), it yields its core between polls.
  void serve(int64_t index, bool crowded) {
    uint32_t seen = 0, seen_read_ahead = 0;
    int64_t read_ahead_done = -1;  // bytes of each stream of the announced rows read so far; -1: all
    auto idle_since = std::chrono::steady_clock::now();
    for (uint32_t polls = 1;; ++polls) {
      if (generation_.load(std::memory_order_acquire) != seen) {
        ++seen;  // the caller waits for every thread before it starts another job
        try {
          piece(index);
        } catch (...) {
          std::lock_guard<std::mutex> lock(error_mutex_);
          if (!error_) error_ = std::current_exception();
        }
        pending_.fetch_sub(1, std::memory_order_release);
        idle_since = std::chrono::steady_clock::now();
        continue;
      }
      if (finished_.load(std::memory_order_acquire)) return;
      // Announced rows, or the rest of them after a piece that came first.
      if (const uint32_t g = read_ahead_generation_.load(std::memory_order_acquire);
          !crowded && (g != seen_read_ahead || read_ahead_done >= 0)) {
        if (g != seen_read_ahead) read_ahead_done = 0;
        seen_read_ahead = g;
        read_ahead_done = read_ahead(index, seen, read_ahead_done);
        continue;
      }
      if (crowded || (polls % 1024 == 0 && std::chrono::steady_clock::now() - idle_since > std::chrono::milliseconds(1)))
        sched_yield();
      else
        _mm_pause();
    }
  }

 private:
  struct Job {
    TeamBody body = nullptr;
    const void* context = nullptr;
    int64_t n = 0, chunk = 0;
  };

  void pause() const {
    if (crowded_) sched_yield();
    else _mm_pause();
  }

  // Thread `index`'s streams of the announced rows from `done` bytes each, line by line side by
  // side, until they are read (returns -1) or main hands out the job after `seen` (returns how far
  // it got).
  int64_t read_ahead(int64_t index, uint32_t seen, int64_t done) {
    RowStreams next;
    int64_t budget;
    {
      std::lock_guard<std::mutex> lock(read_ahead_mutex_);
      next = read_ahead_;
      budget = read_ahead_bytes_;
    }
    constexpr int64_t kMaxStreams = 16;
    const int64_t per_lane = std::min(next.streams_per_thread, kMaxStreams / std::max<int64_t>(1, next.lanes));
    const int64_t streams = per_lane * next.lanes, all = next.threads * next.streams_per_thread;
    if (index >= next.threads || streams <= 0) return -1;
    const int64_t lane_rows = next.rows / next.lanes;
    const char* start[kMaxStreams];
    int64_t bytes[kMaxStreams], longest = 0;
    for (int64_t k = 0; k < streams; ++k) {
      const int64_t i = index * next.streams_per_thread + k % per_lane, first = lane_rows * i / all;
      start[k] = static_cast<const char*>(next.data) + (k / per_lane * lane_rows + first) * next.row_bytes;
      bytes[k] = std::min((lane_rows * (i + 1) / all - first) * next.row_bytes, budget / streams);
      longest = std::max(longest, bytes[k]);
    }
    for (int64_t b = done; b < longest; b += 64) {
      for (int64_t k = 0; k < streams; ++k)
        if (b < bytes[k]) _mm_prefetch(start[k] + b, _MM_HINT_T0);
      if (b % 2048 == 0 && generation_.load(std::memory_order_acquire) != seen) return b + 64;
    }
    return -1;
  }

  void piece(int64_t index) const {
    const int64_t begin = index * job_.chunk;
    if (begin < job_.n) job_.body(job_.context, begin, std::min(job_.n, begin + job_.chunk));
  }

  int64_t threads_ = 1;
  bool crowded_ = false;  // more threads than cores: a spinning thread would hold up a working one
  Job job_;
  std::mutex error_mutex_;
  std::exception_ptr error_;
  alignas(64) std::atomic<uint32_t> generation_{0};
  alignas(64) std::atomic<int64_t> pending_{0};
  alignas(64) std::atomic<bool> finished_{false};
  alignas(64) std::atomic<uint32_t> read_ahead_generation_{0};
  std::mutex read_ahead_mutex_;
  RowStreams read_ahead_;
  int64_t read_ahead_bytes_ = 0;
};

thread_local Team* leading = nullptr;  // the team whose main runs on this thread

}  // namespace

int64_t usable_cores() {
  cpu_set_t usable;
  return ::sched_getaffinity(0, sizeof(usable), &usable) == 0 ? CPU_COUNT(&usable)
                                                              : int64_t(std::thread::hardware_concurrency());
}

void with_worker_team(const std::function<void()>& main) {
  const int threads = at::get_num_threads();
  // Inside a team (any thread of it) or another parallel region: inline.
  if (threads <= 1 || at::in_parallel_region()) return main();
  Team team;
  std::exception_ptr error;
  // No num_threads clause, as at::parallel_for: the region is the team of libgomp's pool that
  // at::get_num_threads() counts (libtorch avoids the clause for GOMP's thread pool, pytorch#32008).
#pragma omp parallel
  {
    if (omp_get_thread_num() == 0) {
      team.start(omp_get_num_threads());
      leading = &team;
      try {
        main();
      } catch (...) {
        error = std::current_exception();
      }
      leading = nullptr;
      team.finish();
    } else {
      team.serve(omp_get_thread_num(), omp_get_num_threads() > usable_cores());
    }
  }
  if (error) std::rethrow_exception(error);
}

void team_read_ahead(const RowStreams& next, int64_t bytes_per_thread) {
  if (leading) leading->announce_read_ahead(next, bytes_per_thread);
}

void team_parallel_for(int64_t n, int64_t grain, TeamBody body, const void* context) {
  grain = std::max<int64_t>(1, grain);
  if (n <= 0) return;
  if (leading) {
    if (n <= grain) return body(context, 0, n);
    return leading->run(n, grain, body, context);
  }
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) { body(context, begin, end); });
}

}  // namespace plugformer
