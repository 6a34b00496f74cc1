// The language strings of Floodgate's pages (`{{t:NAME}}` in a template), in English
// and Chinese, and the few sentences built from numbers. Static tables: any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "pages/language.h"

namespace fg::pages {

// X(name, English, Chinese). The name is what a template writes after "t:".
// "{n}" in a string is replaced by a number (see format_count).
#define FG_PAGES_TEXTS(X)                                                                          \
  X(title_waiting, "You are in line", "您正在排队")                                                \
  X(waiting_intro,                                                                                 \
    "Your request has been received and is held safely in line. Keep this page open: it moves "    \
    "on by itself when it is your turn.",                                                          \
    "您的请求已收到，正在安全排队。请保持此页面打开，轮到您时会自动继续。")                           \
  X(position, "Requests ahead of you", "您前面的排队人数")                                       \
  X(wait, "Estimated wait", "预计等待")                                                            \
  X(wait_under_minute, "less than a minute", "不到 1 分钟")                                        \
  X(wait_minutes, "about {n} min", "约 {n} 分钟")                                                  \
  X(processing, "It is your turn: your request is being handled…", "轮到您了，正在处理您的请求…")  \
  X(done, "Done. Opening the result…", "已完成，正在打开结果…")                                    \
  X(cancel, "Cancel my request", "取消我的请求")                                                   \
  X(cancelled, "Your request was cancelled. Nothing was sent to the shop.",                        \
    "您的请求已取消，没有发送给商店。")                                                             \
  X(cancel_too_late, "Too late to cancel: the shop is already handling your request.",            \
    "已无法取消：商店正在处理您的请求。")                                                           \
  X(failed, "Your request could not be completed.", "您的请求未能完成。")                          \
  X(failed_hint,                                                                                   \
    "Before you try again, check your orders or account so that nothing is done twice. If you "    \
    "contact the shop, give them the reference below.",                                            \
    "再次尝试之前，请先查看您的订单或账户，以免重复提交。如需联系商店，请提供下面的编号。")         \
  X(expired, "Your place in line has expired.", "您的排队已过期。")                                \
  X(expired_hint, "Please go back to the shop and send your request again.",                       \
    "请返回商店重新提交您的请求。")                                                                \
  X(offline, "Connection lost, retrying…", "连接中断，正在重试…")                                  \
  X(noscript, "This page refreshes itself every 5 seconds.", "此页面每 5 秒自动刷新一次。")        \
  X(reference, "Reference", "编号")                                                                \
  X(request_id, "Request ID", "请求编号")                                                          \
  X(title_degraded, "The shop is very busy", "商店当前非常繁忙")                                   \
  X(degraded_text,                                                                                 \
    "Your request could not be taken right now and was not sent to the shop. Please try again "    \
    "in a little while.",                                                                          \
    "暂时无法受理您的请求，请求没有发送给商店。请稍后再试。")                                       \
  X(retry_in, "You can try again in {n} s.", "请在 {n} 秒后重试。")                                \
  X(title_error, "Please wait a moment", "请稍候")                                                 \
  X(error_rate, "You are sending requests faster than the shop can take them.",                    \
    "您的请求过于频繁。")                                                                          \
  X(error_tickets, "You already have requests waiting in line. Please wait for them to finish.",  \
    "您已有请求正在排队，请等待它们完成。")                                                         \
  X(error_queue_full, "The line is full right now.", "当前排队人数已满。")                         \
  X(error_unavailable, "The service is temporarily unavailable.", "服务暂时不可用。")

enum class Text : uint8_t {
#define FG_PAGES_TEXT_ENUM(name, en, zh) k_##name,
  FG_PAGES_TEXTS(FG_PAGES_TEXT_ENUM)
#undef FG_PAGES_TEXT_ENUM
  kCount
};

// The string for `t` in `lang` (never empty).
std::string_view text(Text t, Language lang);

// `{{t:NAME}}` lookup at template parse time; nullopt for an unknown NAME.
std::optional<Text> find_text(std::string_view name);

// Every NAME, comma-separated, for error messages and documentation.
std::string text_names();

// Appends `t` with "{n}" replaced by `n` (wait_minutes, retry_in).
void format_count(Text t, Language lang, uint64_t n, std::string* out);

// The estimated wait as a phrase: "less than a minute" below 60 s, else
// "about N min" with N rounded up. The page script computes the same from the data-
// attributes the built-in page carries, so the text does not change form when the
// first long-poll answer arrives.
void format_wait(uint64_t seconds, Language lang, std::string* out);

// The sentence for one of Floodgate's own refusals, chosen by the JSON `error` code
// when it has one of its own (too_many_tickets, queue_full) and else by status
// (429: rate, anything else: unavailable). Fill `{{message}}` of the error page with it.
std::string_view refusal_message(int status, std::string_view error_code, Language lang);

}  // namespace fg::pages
