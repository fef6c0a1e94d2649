/* C helpers for parts of the Apache/APR API that exist only as macros.
 * Compiled by build.rs with cc; declared to Rust through bindgen.
 * Each helper is a one-line wrapper of the macro of the same name. */
#ifndef PROCD_SHIM_H
#define PROCD_SHIM_H

#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <apr_buckets.h>

/* ap_get_module_config / ap_set_module_config (macros unless AP_DEBUG). */
void *procd_get_module_config(const ap_conf_vector_t *cv, const module *m);

/* The DocumentRoot of a server (core's server config). */
const char *procd_document_root(server_rec *s);

/* Bucket-brigade navigation (APR_BRIGADE_* / APR_BUCKET_* macros). */
apr_bucket *procd_brigade_first(apr_bucket_brigade *bb);
apr_bucket *procd_brigade_sentinel(apr_bucket_brigade *bb);
apr_bucket *procd_bucket_next(apr_bucket *b);
int procd_brigade_empty(apr_bucket_brigade *bb);
/* APR_STATUS_IS_EAGAIN, a macro. */
int procd_status_is_eagain(apr_status_t s);
void procd_brigade_insert_tail(apr_bucket_brigade *bb, apr_bucket *b);
void procd_brigade_concat(apr_bucket_brigade *a, apr_bucket_brigade *b);
void procd_bucket_remove(apr_bucket *b);
void procd_bucket_delete(apr_bucket *b);
void procd_bucket_insert_before(apr_bucket *at, apr_bucket *b);
apr_status_t procd_bucket_split(apr_bucket *b, apr_size_t point);
int procd_bucket_is_eos(const apr_bucket *b);
int procd_bucket_is_flush(const apr_bucket *b);
int procd_bucket_is_metadata(const apr_bucket *b);
apr_status_t procd_bucket_read(apr_bucket *b, const char **str, apr_size_t *len,
                               apr_read_type_e block);

#endif
