// A state type of your own under StateManager: what a price-feed watcher
// remembers. Two things make it work: Boost.JSON conversions (tag_invoke for
// value_from and try_value_to) and a StateTraits specialisation saying where
// its timestamp is, since it is not called last_updated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "atomic_state.hpp"

namespace feeds {

struct FeedState {
  std::string feed;             // "SOL/USD"
  std::int64_t round = 0;       // the oracle's round number
  std::int64_t updated_at = 0;  // unix seconds of that round
  double price = 0;
  std::vector<double> recent;  // the last few prices, oldest first

  bool operator==(const FeedState& o) const {
    return feed == o.feed && round == o.round && updated_at == o.updated_at && price == o.price &&
           recent == o.recent;
  }
};

inline void tag_invoke(boost::json::value_from_tag, boost::json::value& jv, const FeedState& s) {
  boost::json::object& o = jv.emplace_object();
  o["feed"] = s.feed;
  o["round"] = s.round;
  o["updated_at"] = s.updated_at;
  o["price"] = s.price;
  boost::json::array& recent = o["recent"].emplace_array();
  for (double p : s.recent) recent.push_back(p);
}

// The non-throwing conversion: a wrong file is reported, not thrown.
inline boost::json::result<FeedState> tag_invoke(boost::json::try_value_to_tag<FeedState>,
                                                 const boost::json::value& jv) {
  const boost::json::object* o = jv.if_object();
  if (o == nullptr) return boost::json::make_error_code(boost::json::error::not_object);
  FeedState s;
  auto feed = boost::json::try_value_to<std::string>(o->contains("feed") ? o->at("feed") : "");
  auto round = boost::json::try_value_to<std::int64_t>(o->contains("round") ? o->at("round") : 0);
  auto at =
      boost::json::try_value_to<std::int64_t>(o->contains("updated_at") ? o->at("updated_at") : 0);
  auto price = boost::json::try_value_to<double>(o->contains("price") ? o->at("price") : 0.0);
  if (!feed) return feed.error();
  if (!round) return round.error();
  if (!at) return at.error();
  if (!price) return price.error();
  s.feed = std::move(*feed);
  s.round = *round;
  s.updated_at = *at;
  s.price = *price;
  if (const boost::json::value* recent = o->if_contains("recent")) {
    auto list = boost::json::try_value_to<std::vector<double>>(*recent);
    if (!list) return list.error();
    s.recent = std::move(*list);
  }
  return s;
}

}  // namespace feeds

// Where StateManager finds the timestamp that should_process compares.
template <>
struct atomic_state::StateTraits<feeds::FeedState> {
  static std::int64_t last_updated(const feeds::FeedState& s) noexcept { return s.updated_at; }
};
