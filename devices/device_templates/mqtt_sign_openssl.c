/* The platform's MQTT signature (MQTT-ACCESS.md sections 2-3) with OpenSSL, for Linux gateways.
 * content = "clientId" c "deviceId" d "productId" p ["timestamp" t],
 * password = lowercase hex of HMAC(deviceSecret, content). Link with -lcrypto. */
#include <stdio.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

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
    const EVP_MD *md;
    if (strcmp(signmethod, "hmacmd5") == 0) md = EVP_md5();
    else if (strcmp(signmethod, "hmacsha1") == 0) md = EVP_sha1();
    else if (strcmp(signmethod, "hmacsha256") == 0) md = EVP_sha256();
    else return -1;
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

    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    if (HMAC(md, device_secret, (int)strlen(device_secret), (const unsigned char *)content,
             strlen(content), mac, &size) == NULL) return -1;
    for (unsigned int i = 0; i < size; i++) snprintf(out->password + 2 * i, 3, "%02x", mac[i]);
    return 0;
}
