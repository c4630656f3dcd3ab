#ifndef NETDISKFS_CCURLSHIM_H
#define NETDISKFS_CCURLSHIM_H
#include <curl/curl.h>

/// curl_easy_setopt and curl_easy_getinfo are variadic; Swift needs typed entry points.
CURLcode ndfs_curl_setopt_long(CURL *handle, CURLoption option, long value);
CURLcode ndfs_curl_setopt_string(CURL *handle, CURLoption option, const char *value);
CURLcode ndfs_curl_setopt_pointer(CURL *handle, CURLoption option, void *value);
CURLcode ndfs_curl_setopt_off_t(CURL *handle, CURLoption option, curl_off_t value);
CURLcode ndfs_curl_getinfo_long(CURL *handle, CURLINFO info, long *value);

/// Callbacks are function pointers; passing them through `void *` would lose their type.
CURLcode ndfs_curl_setopt_write_function(CURL *handle, curl_write_callback callback);
CURLcode ndfs_curl_setopt_read_function(CURL *handle, curl_read_callback callback);
CURLcode ndfs_curl_setopt_seek_function(CURL *handle, curl_seek_callback callback);
CURLcode ndfs_curl_setopt_xferinfo_function(CURL *handle, curl_xferinfo_callback callback);
CURLcode ndfs_curl_setopt_headers(CURL *handle, struct curl_slist *headers);

CURLcode ndfs_curl_getinfo_pointer(CURL *handle, CURLINFO info, void **value);
CURLcode ndfs_curl_getinfo_string(CURL *handle, CURLINFO info, const char **value);
CURLcode ndfs_curl_getinfo_off_t(CURL *handle, CURLINFO info, curl_off_t *value);

/// curl_multi_setopt is variadic too.
CURLMcode ndfs_curl_multi_setopt_long(CURLM *multi, CURLMoption option, long value);

/// CURLMsg keeps its result in an anonymous union; these read it without relying on Swift's union import.
int ndfs_curl_msg_is_done(const CURLMsg *message);
CURLcode ndfs_curl_msg_result(const CURLMsg *message);
CURL *ndfs_curl_msg_easy(const CURLMsg *message);

#endif
