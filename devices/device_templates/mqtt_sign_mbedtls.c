/* The platform's MQTT signature (MQTT-ACCESS.md sections 2-3) with mbedTLS, as ESP-IDF and
 * Arduino-ESP32 ship it. content = "clientId" c "deviceId" d "productId" p ["timestamp" t],
 * password = lowercase hex of HMAC(deviceSecret, content). */
#include <stdio.h>
#include <string.h>
#include "mbedtls/md.h"

typedef struct {
    char client_id[160]; /* mqttClientId */
    char username[132];  /* mqttUsername: deviceId&productId */
    char password[65];   /* mqttPassword: lowercase hex */
} mqtt_sign_fields;

/* signmethod: "hmacmd5", "hmacsha1" or "hmacsha256"; securemode: 2 (TLS) or 3 (plain TCP);
 * timestamp_ms: milliseconds since 1970, or -1 to leave it out; exclusive: 0 or 1.
 * Returns 0, or -1 when an argument is unknown or too long. */
int mqtt_sign(const char *product_id, const char *device_id, const char *device_secret,
              const char *client_id, int securemode, const char *signmethod,
              long long timestamp_ms, int exclusive, mqtt_sign_fields *out)
{
    mbedtls_md_type_t type;
    if (strcmp(signmethod, "hmacmd5") == 0) type = MBEDTLS_MD_MD5;
    else if (strcmp(signmethod, "hmacsha1") == 0) type = MBEDTLS_MD_SHA1;
    else if (strcmp(signmethod, "hmacsha256") == 0) type = MBEDTLS_MD_SHA256;
    else return -1;
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(type);
    if (md == NULL || (securemode != 2 && securemode != 3)) return -1;

    char ts[24] = "";
    if (timestamp_ms >= 0) snprintf(ts, sizeof ts, "%lld", timestamp_ms);
    char content[256];
    int n = snprintf(content, sizeof content, "clientId%sdeviceId%sproductId%s%s%s", client_id,
                     device_id, product_id, ts[0] ? "timestamp" : "", ts);
    if (n < 0 || n >= (int)sizeof content) return -1;
    n = snprintf(out->client_id, sizeof out->client_id, "%s|securemode=%d,signmethod=%s%s%s%s|",
                 client_id, securemode, signmethod, ts[0] ? ",timestamp=" : "", ts,
                 exclusive ? ",exclusive=true" : "");
    if (n < 0 || n >= (int)sizeof out->client_id) return -1;
    n = snprintf(out->username, sizeof out->username, "%s&%s", device_id, product_id);
    if (n < 0 || n >= (int)sizeof out->username) return -1;

    unsigned char mac[32];
    if (mbedtls_md_hmac(md, (const unsigned char *)device_secret, strlen(device_secret),
                        (const unsigned char *)content, strlen(content), mac) != 0) return -1;
    size_t size = mbedtls_md_get_size(md);
    for (size_t i = 0; i < size; i++) snprintf(out->password + 2 * i, 3, "%02x", mac[i]);
    return 0;
}
