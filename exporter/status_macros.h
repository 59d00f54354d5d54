// KSPAN_RETURN_IF_ERROR(expr): return the absl::Status that `expr` gives
// when it is not OK, from a function returning absl::Status or
// absl::StatusOr<T>. Abseil keeps its own such macro internal, so kspan has
// this one; the exporter is the lowest layer, so every layer can include it.
#pragma once

#define KSPAN_RETURN_IF_ERROR(expr)                         \
  do {                                                      \
    if (auto kspan_status_ = (expr); !kspan_status_.ok()) { \
      return kspan_status_;                                 \
    }                                                       \
  } while (0)
