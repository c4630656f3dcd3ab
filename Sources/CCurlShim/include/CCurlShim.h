#ifndef NETDISKFS_CCURLSHIM_H
#define NETDISKFS_CCURLSHIM_H
#include <curl/curl.h>

/// curl_easy_setopt and curl_easy_getinfo are variadic; Swift needs typed entry points.
CURLcode ndfs_curl_setopt_long(CURL *handle, CURLoption option, long value);
CURLcode ndfs_curl_setopt_string(CURL *handle, CURLoption option, const char *value);
CURLcode ndfs_curl_setopt_pointer(CURL *handle, CURLoption option, void *value);
CURLcode ndfs_curl_setopt_off_t(CURL *handle, CURLoption option, curl_off_t value);
CURLcode ndfs_curl_getinfo_long(CURL *handle, CURLINFO info, long *value);

#endif
