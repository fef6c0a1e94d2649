/* One-line wrappers of Apache/APR macros, so that Rust can call them.
 * See include/procd_shim.h. */
#include "procd_shim.h"

void *procd_get_module_config(const ap_conf_vector_t *cv, const module *m)
{
    return ap_get_module_config(cv, m);
}

const char *procd_document_root(server_rec *s)
{
    core_server_config *conf = ap_get_core_module_config(s->module_config);
    return conf ? conf->ap_document_root : NULL;
}

apr_bucket *procd_brigade_first(apr_bucket_brigade *bb) { return APR_BRIGADE_FIRST(bb); }
apr_bucket *procd_brigade_sentinel(apr_bucket_brigade *bb) { return APR_BRIGADE_SENTINEL(bb); }
apr_bucket *procd_bucket_next(apr_bucket *b) { return APR_BUCKET_NEXT(b); }
int procd_brigade_empty(apr_bucket_brigade *bb) { return APR_BRIGADE_EMPTY(bb); }
void procd_brigade_insert_tail(apr_bucket_brigade *bb, apr_bucket *b) { APR_BRIGADE_INSERT_TAIL(bb, b); }
void procd_brigade_concat(apr_bucket_brigade *a, apr_bucket_brigade *b) { APR_BRIGADE_CONCAT(a, b); }
void procd_bucket_remove(apr_bucket *b) { APR_BUCKET_REMOVE(b); }
void procd_bucket_delete(apr_bucket *b) { apr_bucket_delete(b); }
void procd_bucket_insert_before(apr_bucket *at, apr_bucket *b) { APR_BUCKET_INSERT_BEFORE(at, b); }
apr_status_t procd_bucket_split(apr_bucket *b, apr_size_t point) { return apr_bucket_split(b, point); }
int procd_bucket_is_eos(const apr_bucket *b) { return APR_BUCKET_IS_EOS(b); }
int procd_bucket_is_flush(const apr_bucket *b) { return APR_BUCKET_IS_FLUSH(b); }
int procd_bucket_is_metadata(const apr_bucket *b) { return APR_BUCKET_IS_METADATA(b); }
apr_status_t procd_bucket_read(apr_bucket *b, const char **str, apr_size_t *len,
                               apr_read_type_e block)
{
    return apr_bucket_read(b, str, len, block);
}

int procd_status_is_eagain(apr_status_t s) { return APR_STATUS_IS_EAGAIN(s); }
